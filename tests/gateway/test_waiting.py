"""No request waits unless its client asked: a command's 202 carries the escrow's new state and version,
and a client that wants the read model to show it asks `Prefer: wait=N` (RFC 7240, capped) or reads with
`?min_version=` / `If-None-Match`. The bus is left to a worker here (inline dispatch off), as in production."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from apps.outbox.worker import BusWorker
from tests.gateway.support import settle
from tests.helpers import act, create_escrow, pay


@pytest.fixture
def no_inline_bus(settings: Any) -> None:
    settings.BUS_INLINE_DISPATCH = False


@pytest.fixture
def bus_worker(transactional_db: None) -> Iterator[None]:
    worker = BusWorker(poll_seconds=0.2)

    def run() -> None:
        try:
            worker.run_forever()
        finally:
            connection.close()

    with override_settings(BUS_INLINE_DISPATCH=False):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            worker.stop()
            thread.join(10)
    assert not thread.is_alive(), "the bus worker did not stop"


def _funded(api_client: Any, buyer: Any, seller: Any) -> tuple[Any, Any, str]:
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    settle()
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    return as_buyer, as_seller, escrow_id


def test_a_202_carries_the_new_state_and_version_and_does_not_wait(api_client, buyer, seller, no_inline_bus):
    as_buyer, as_seller, escrow_id = _funded(api_client, buyer, seller)
    before = as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()

    with CaptureQueriesContext(connection) as captured:
        answer = act(as_seller, escrow_id, "deliver")
    assert answer.status_code == 202
    assert answer.json()["state"] == "DELIVERED" and answer.json()["version"] == before["version"] + 1
    assert "Preference-Applied" not in answer
    # no read of the read model inside the command's request: nobody polled it
    assert not [q for q in captured.captured_queries if "projections_" in q["sql"]]

    # the read model has not applied it yet (no bus ran): a read that names the version is told so
    version = answer.json()["version"]
    behind = as_buyer.get(f"/api/v1/escrows/{escrow_id}?min_version={version}")
    assert behind.status_code == 412, behind.content
    assert behind.json()["code"] == "version_not_reached" and behind.json()["version"] == before["version"]
    assert behind["Retry-After"]
    settle()
    caught_up = as_buyer.get(f"/api/v1/escrows/{escrow_id}?min_version={version}")
    assert caught_up.status_code == 200 and caught_up.json()["state"] == "DELIVERED"


@pytest.mark.postgres_only
def test_prefer_wait_answers_once_the_read_model_shows_the_command(api_client, buyer, seller, bus_worker):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    created = as_buyer.post(
        "/api/v1/escrows",
        {"seller": seller.username, "amount": "10.00", "currency": "USD", "description": "a hat"},
        format="json",
        HTTP_PREFER="wait=5",
    )
    assert created.status_code == 202 and created["Preference-Applied"] == "wait=5"
    escrow_id = created.json()["escrow_id"]
    # the creator's next GET finds it (no 404 while the projection catches up)
    assert as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()["state"] == "AWAIT_ACCEPTANCE"

    accepted = act(as_seller, escrow_id, "accept", HTTP_PREFER="respond-async, wait=5")
    assert accepted.status_code == 202 and accepted["Preference-Applied"] == "wait=5"
    assert as_seller.get(f"/api/v1/escrows/{escrow_id}").json()["state"] == "AWAIT_FUNDS"

    # the sandbox payment waits for the payment to be issued only when asked to
    paid = as_buyer.post(f"/api/v1/sandbox/escrows/{escrow_id}/pay", HTTP_PREFER="wait=5")
    assert paid.status_code == 202, paid.content

    # a read may wait for a version instead
    shown = as_buyer.get(f"/api/v1/escrows/{escrow_id}?min_version=3", HTTP_PREFER="wait=5")
    assert shown.status_code == 200 and shown.json()["state"] == "FUNDS_HELD"
    assert shown["Preference-Applied"] == "wait=5"


def test_the_wait_is_capped_by_the_server(api_client, buyer, seller, settings, no_inline_bus):
    settings.PREFER_WAIT_MAX_SECONDS = 1
    as_buyer, as_seller, escrow_id = _funded(api_client, buyer, seller)
    # nothing applies the command here: the wait runs out at the cap, and the 202 stands
    answer = act(as_seller, escrow_id, "deliver", HTTP_PREFER="wait=600")
    assert answer.status_code == 202 and answer["Preference-Applied"] == "wait=1"
    late = as_buyer.get(f"/api/v1/escrows/{escrow_id}?min_version={answer.json()['version']}", HTTP_PREFER="wait=600")
    assert late.status_code == 412 and late["Preference-Applied"] == "wait=1"
    # a preference the server does not know is ignored (RFC 7240)
    plain = as_buyer.get(f"/api/v1/escrows/{escrow_id}", HTTP_PREFER="return=minimal")
    assert plain.status_code == 200 and "Preference-Applied" not in plain


def test_etag_and_if_none_match(api_client, buyer, seller, no_inline_bus):
    as_buyer, as_seller, escrow_id = _funded(api_client, buyer, seller)
    url = f"/api/v1/escrows/{escrow_id}"
    first = as_buyer.get(url)
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('"')

    unchanged = as_buyer.get(url, HTTP_IF_NONE_MATCH=etag)
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged["ETag"] == etag
    assert as_buyer.get(url, HTTP_IF_NONE_MATCH=f'"other", W/{etag}').status_code == 304
    assert as_buyer.get(url, HTTP_IF_NONE_MATCH='"other"').status_code == 200
    # the representation is the caller's: the seller's differs (their actions), so does its tag
    assert as_seller.get(url)["ETag"] != etag

    assert act(as_seller, escrow_id, "deliver").status_code == 202
    settle()
    changed = as_buyer.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["state"] == "DELIVERED" and changed["ETag"] != etag


def test_a_stranger_learns_nothing_from_the_conditions(api_client, buyer, seller, stranger, no_inline_bus):
    _, _, escrow_id = _funded(api_client, buyer, seller)
    as_stranger = api_client(stranger)
    for query in ("", "?min_version=1", "?min_version=99"):
        answer = as_stranger.get(f"/api/v1/escrows/{escrow_id}{query}", HTTP_IF_NONE_MATCH="*")
        assert answer.status_code == 404, (query, answer.status_code)


@pytest.mark.parametrize("query", ["min_version=0", "min_version=x", "min_version=1&min_version=2", "colour=blue"])
def test_a_bad_read_condition_is_a_400(api_client, buyer, seller, no_inline_bus, query):
    as_buyer, _, escrow_id = _funded(api_client, buyer, seller)
    answer = as_buyer.get(f"/api/v1/escrows/{escrow_id}?{query}")
    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "validation_error"
