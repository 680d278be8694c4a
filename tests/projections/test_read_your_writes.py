"""Read-your-writes, when the client asks for it: with delivery left to a bus worker thread (inline
dispatch off), a GET right after a mutation's 202 shows that mutation if the mutation was sent with
`Prefer: wait=N`, or if the GET names the version the 202 gave (`?min_version=`) and lets the server wait.
(The 202 no longer waits by default: docs/api.md, "Waiting for the read model".)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from apps.outbox.worker import BusWorker
from tests.gateway.support import settle
from tests.helpers import act, create_escrow


@pytest.fixture
def worker_only(transactional_db: None) -> Iterator[None]:
    worker = BusWorker(poll_seconds=0.2)

    def run() -> None:
        try:
            worker.run_forever()
        finally:
            connection.close()

    with override_settings(BUS_INLINE_DISPATCH=False, PREFER_WAIT_MAX_SECONDS=2.0):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            worker.stop()
            thread.join(10)
    assert not thread.is_alive(), "the bus worker did not stop"


WAIT = {"HTTP_PREFER": "wait=2"}


def client_get(client: Any, path: str) -> dict[str, Any]:
    response = client.get(path, **WAIT)
    assert response.status_code == 200, response.content
    return response.json()


def _get(client: Any, escrow_id: str, **headers: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/escrows/{escrow_id}", **headers)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.postgres_only
@pytest.mark.parametrize("round_", range(3))
def test_a_get_after_each_202_shows_the_command(
    round_: int, worker_only: None, api_client: Any, buyer: Any, seller: Any, staff: Any
) -> None:
    as_buyer, as_seller, as_staff = api_client(buyer), api_client(seller), api_client(staff)

    created = create_escrow(as_buyer, seller=seller)
    escrow_id = created["escrow_id"]
    # the next GET for the version the acceptance's 202 gave finds it (no 404 while the projection catches up)
    version = created["accepted"]["version"]
    assert client_get(as_buyer, f"/api/v1/escrows/{escrow_id}?min_version={version}")["state"] == "AWAIT_FUNDS"

    # the payment is the provider's event, not this user's command: wait for the chain like a client would
    assert as_buyer.post(f"/api/v1/sandbox/escrows/{escrow_id}/pay", **WAIT).status_code == 202
    settle()
    assert _get(as_buyer, escrow_id)["state"] == "FUNDS_HELD"

    assert act(as_seller, escrow_id, "deliver", **WAIT).status_code == 202
    assert _get(as_seller, escrow_id)["state"] == "DELIVERED"

    assert act(as_buyer, escrow_id, "dispute", {"reason": "not as described"}, **WAIT).status_code == 202
    assert _get(as_buyer, escrow_id)["state"] == "DISPUTED"
    timeline = as_buyer.get(f"/api/v1/escrows/{escrow_id}/events").json()
    assert timeline[-1]["type"] == "EscrowDisputed"

    answer = act(as_staff, escrow_id, "resolve", {"outcome": "refund"}, **WAIT)
    assert answer.status_code == 202
    # the resolution itself is visible; the refund settling is the provider's business
    assert _get(as_staff, escrow_id)["version"] >= 5
    types = [e["type"] for e in as_staff.get(f"/api/v1/escrows/{escrow_id}/events").json()]
    assert "EscrowDisputeResolved" in types and "EscrowRefundRequested" in types
