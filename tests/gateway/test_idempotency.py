"""The Idempotency-Key header: a retried POST has one effect and gets the first answer back."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction

from apps.escrow.models import Escrow, EscrowEvent
from apps.gateway.models import IdempotencyRecord
from apps.outbox.models import OutboxMessage
from tests.factories import UserFactory
from tests.gateway.support import assert_problem, create_settled, settle, table_counts
from tests.helpers import act, pay

ESCROWS = "/api/v1/escrows"


def body_for(seller: Any, amount: str = "149.99") -> dict[str, Any]:
    return {"seller": seller.username, "amount": amount, "currency": "USD", "description": "Dominus"}


def post_create(client: Any, body: dict[str, Any], key: str) -> Any:
    return client.post(ESCROWS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_replays_the_first_answer(api_client, buyer, seller):
    client = api_client(buyer)
    first = post_create(client, body_for(seller), "order-1")
    after_first = table_counts()

    again = post_create(client, body_for(seller), "order-1")

    assert first.status_code == again.status_code == 202
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert table_counts() == after_first
    assert Escrow.objects.count() == 1


def test_a_retried_command_has_one_effect(api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    first = act(as_seller, escrow_id, "dispute", {"reason": "buyer went quiet"}, HTTP_IDEMPOTENCY_KEY="d-1")
    after_first = table_counts()

    again = act(as_seller, escrow_id, "dispute", {"reason": "buyer went quiet"}, HTTP_IDEMPOTENCY_KEY="d-1")

    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json()["command_id"] == first.json()["command_id"]
    assert table_counts() == after_first
    assert EscrowEvent.objects.filter(escrow_id=escrow_id, type__endswith="EscrowDisputed").count() == 1


def test_the_same_key_with_another_body_is_422(api_client, buyer, seller):
    client = api_client(buyer)
    post_create(client, body_for(seller, "149.99"), "order-1")
    before = table_counts()

    other_amount = post_create(client, body_for(seller, "150.00"), "order-1")
    other_route = act(client, Escrow.objects.get().pk, "cancel", {}, HTTP_IDEMPOTENCY_KEY="order-1")

    assert_problem(other_amount, 422, "idempotency_key_reused")
    assert_problem(other_route, 422, "idempotency_key_reused")
    assert table_counts() == before
    assert Escrow.objects.get().state == "AWAIT_ACCEPTANCE"


def test_a_refusal_by_the_state_machine_is_replayed_too(api_client, buyer, seller):
    client = api_client(buyer)
    escrow_id = create_settled(client, seller=seller)["escrow_id"]

    first = act(client, escrow_id, "release", {}, HTTP_IDEMPOTENCY_KEY="r-1")
    again = act(client, escrow_id, "release", {}, HTTP_IDEMPOTENCY_KEY="r-1")

    assert_problem(first, 409, "invalid_transition")
    assert_problem(again, 409, "invalid_transition")
    assert again["Idempotent-Replayed"] == "true"


def test_an_invalid_request_does_not_use_up_its_key(api_client, buyer, seller):
    client = api_client(buyer)
    before = table_counts()

    refused = post_create(client, body_for(seller, "1.001"), "order-7")
    assert_problem(refused, 400, "validation_error")
    assert table_counts() == before

    corrected = post_create(client, body_for(seller, "1.01"), "order-7")
    assert corrected.status_code == 202
    assert IdempotencyRecord.objects.filter(key="order-7").count() == 1


def test_the_key_belongs_to_the_caller(api_client, buyer, seller):
    other_buyer = UserFactory(username="other-buyer")

    mine = post_create(api_client(buyer), body_for(seller), "shared-key")
    theirs = post_create(api_client(other_buyer), body_for(seller), "shared-key")

    assert mine.status_code == theirs.status_code == 202
    assert "Idempotent-Replayed" not in theirs
    assert mine.json()["escrow_id"] != theirs.json()["escrow_id"]
    assert mine.json()["command_id"] != theirs.json()["command_id"]
    assert set(Escrow.objects.values_list("buyer_id", flat=True)) == {buyer.pk, other_buyer.pk}


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tin-key"])
def test_a_malformed_key_is_refused(api_client, buyer, seller, key):
    client, before = api_client(buyer), table_counts()

    assert_problem(post_create(client, body_for(seller), key), 400, "invalid_idempotency_key")
    assert table_counts() == before


# --- in flight, on PostgreSQL with real concurrent requests -------------------------------------------


def _a_request_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.datname = current_database()"
        )
        return bool(cursor.fetchone()[0])


@pytest.mark.postgres_only
def test_the_same_key_while_in_flight_is_409(api_client, buyer, seller):
    # Given: a delivered escrow whose row another transaction holds locked, so a release waits inside it.
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    locked, unlock = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        try:
            with transaction.atomic():
                Escrow.objects.select_for_update().get(pk=escrow_id)
                locked.set()
                unlock.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(30)
    first: list[Any] = []

    def release() -> None:
        try:
            first.append(act(api_client(buyer), escrow_id, "release", {}, HTTP_IDEMPOTENCY_KEY="rel-1"))
        finally:
            connections.close_all()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        for _ in range(3000):
            # In flight: the first request holds the key's lock in its transaction and waits for the row.
            if _a_request_waits_for_a_lock():
                break
            threading.Event().wait(0.01)
        # When: the same request arrives while the first is still waiting for the row.
        second = act(api_client(buyer), escrow_id, "release", {}, HTTP_IDEMPOTENCY_KEY="rel-1")
    finally:
        unlock.set()
        holder.join(30)
        releaser.join(30)

    # Then: the second is told to wait; the first goes through once.
    assert_problem(second, 409, "idempotency_key_in_flight")
    assert first[0].status_code == 202
    replay = act(as_buyer, escrow_id, "release", {}, HTTP_IDEMPOTENCY_KEY="rel-1")
    assert replay.status_code == 202 and replay["Idempotent-Replayed"] == "true"
    assert replay.json()["command_id"] == first[0].json()["command_id"]
    settle()
    assert OutboxMessage.objects.filter(aggregate_id=escrow_id, type__endswith="TransferToSeller").count() == 1
    assert Escrow.objects.get(pk=escrow_id).state == "RELEASED"


@pytest.mark.postgres_only
def test_concurrent_requests_with_one_key_have_one_effect(api_client, buyer, seller):
    clients = [api_client(buyer) for _ in range(12)]
    start = threading.Barrier(len(clients))
    answers: list[Any] = []

    def send(client: Any) -> None:
        try:
            start.wait(30)
            answers.append(post_create(client, body_for(seller), "burst"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = sorted(answer.status_code for answer in answers)
    accepted = [answer for answer in answers if answer.status_code == 202]
    assert len(answers) == 12 and set(statuses) <= {202, 409}, statuses
    assert len([a for a in accepted if "Idempotent-Replayed" not in a]) == 1
    assert len({a.json()["command_id"] for a in accepted}) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "idempotency_key_in_flight")
    settle()
    assert Escrow.objects.count() == 1
    assert EscrowEvent.objects.filter(type__endswith="EscrowCreated").count() == 1
    assert OutboxMessage.objects.filter(type__endswith=".CreateEscrow").count() == 1
