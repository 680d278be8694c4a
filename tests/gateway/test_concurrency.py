"""Concurrent clients on PostgreSQL: conflicting commands on one escrow, and many whole trades at once.
Only PostgreSQL runs writers truly in parallel, so these are skipped on SQLite."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections
from django.db.models import Count

from apps.escrow.models import Escrow, EscrowEvent
from apps.outbox.drain import drain
from apps.outbox.models import DeadLetter, OutboxMessage, ProcessedMessage
from tests.factories import UserFactory
from tests.gateway.support import assert_problem, create_settled, settle
from tests.helpers import act, pay

pytestmark = pytest.mark.postgres_only

PAYMENT_COMMANDS = ("payments.v1.TransferToSeller", "payments.v1.InitiateRefund")


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the calls in threads released together by a barrier; returns their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        try:
            barrier.wait(30)
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(run, call) for call in calls]]


def payment_commands(escrow_id: str) -> int:
    return OutboxMessage.objects.filter(aggregate_id=escrow_id, type__in=PAYMENT_COMMANDS).count()


def funded_escrow(as_buyer: Any, seller: Any) -> str:
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    return escrow_id


@pytest.mark.parametrize("round_", range(4))
def test_release_races_dispute(api_client, buyer, seller, round_):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(as_buyer, seller)
    assert act(as_seller, escrow_id, "deliver").status_code == 202

    release, dispute = at_once(
        lambda: act(api_client(buyer), escrow_id, "release"),
        lambda: act(api_client(seller), escrow_id, "dispute", {"reason": "no payment yet?"}),
    )

    assert sorted([release.status_code, dispute.status_code]) == [202, 409]
    loser = dispute if release.status_code == 202 else release
    assert_problem(loser, 409, "invalid_transition")
    settle()
    escrow = Escrow.objects.get(pk=escrow_id)
    if release.status_code == 202:
        assert loser.json()["state"] == "RELEASING" and escrow.state == "RELEASED"
        assert payment_commands(escrow_id) == 1
    else:
        assert loser.json()["state"] == "DISPUTED" and escrow.state == "DISPUTED"
        assert payment_commands(escrow_id) == 0


@pytest.mark.parametrize("round_", range(4))
def test_cancel_races_deliver(api_client, buyer, seller, round_):
    escrow_id = funded_escrow(api_client(buyer), seller)

    cancel, deliver = at_once(
        lambda: act(api_client(seller), escrow_id, "cancel", {"reason": "out of stock"}),
        lambda: act(api_client(seller), escrow_id, "deliver"),
    )

    assert sorted([cancel.status_code, deliver.status_code]) == [202, 409]
    settle()
    final = Escrow.objects.get(pk=escrow_id).state
    assert final == ("REFUNDED" if cancel.status_code == 202 else "DELIVERED")
    assert payment_commands(escrow_id) == (1 if cancel.status_code == 202 else 0)


@pytest.mark.parametrize("round_", range(4))
def test_two_agents_resolve_one_dispute_differently(api_client, buyer, seller, round_):
    from tests.factories import StaffFactory

    agents = [StaffFactory(username=f"agent-{n}") for n in range(2)]
    escrow_id = funded_escrow(api_client(buyer), seller)
    assert act(api_client(buyer), escrow_id, "dispute", {"reason": "wrong item"}).status_code == 202

    release, refund = at_once(
        lambda: act(api_client(agents[0]), escrow_id, "resolve", {"outcome": "release"}),
        lambda: act(api_client(agents[1]), escrow_id, "resolve", {"outcome": "refund"}),
    )

    assert sorted([release.status_code, refund.status_code]) == [202, 409]
    settle()
    escrow = Escrow.objects.get(pk=escrow_id)
    assert escrow.state == ("RELEASED" if release.status_code == 202 else "REFUNDED")
    assert payment_commands(escrow_id) == 1
    assert escrow.received_minor == escrow.paid_out_minor + escrow.fee_minor + escrow.refunded_minor
    assert EscrowEvent.objects.filter(escrow_id=escrow_id, type__endswith="EscrowDisputeResolved").count() == 1


# --- many whole trades at once ------------------------------------------------------------------------

TRADES, WORKERS, PARTIES = 200, 12, 24
EXPECTED = [
    "EscrowCreated",
    "EscrowAccepted",
    "EscrowFundsHeld",
    "EscrowDelivered",
    "EscrowReleaseRequested",
    "EscrowReleased",
]


def until(check: Callable[[], Any], what: str, *, limit_seconds: float = 120.0) -> Any:
    """Polls a read until it holds, helping the bus along: under load the inline pass may leave work to
    the worker loop, which this test does not run. The limit bounds a stuck trade, nothing more."""
    deadline = time.monotonic() + limit_seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        drain()
        time.sleep(0.005)


def drive_trade(number: int, as_buyer: Any, as_seller: Any, seller: Any) -> str:
    """One whole trade, as a client would drive it: every POST carries an Idempotency-Key, so a retry
    after a 404 (read model not there yet) or a 409 (key in flight) is safe."""
    try:
        created = as_buyer.post(
            "/api/v1/escrows",
            {
                "seller": seller.username,
                "amount": "149.99",
                "currency": "USD",
                "description": f"trade {number}",
            },
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"trade-{number}",
        )
        assert created.status_code == 202, created.content
        escrow_id = created.json()["escrow_id"]

        def state_is(state: str) -> bool:
            response = as_buyer.get(f"/api/v1/escrows/{escrow_id}")
            return response.status_code == 200 and response.json()["state"] == state

        key = str(uuid.uuid4())
        until(
            lambda: act(as_seller, escrow_id, "accept", HTTP_IDEMPOTENCY_KEY=key).status_code == 202,
            f"trade {number} accepted",
        )
        until(lambda: pay(as_buyer, escrow_id).status_code == 202, f"trade {number} to be paid")
        until(lambda: state_is("FUNDS_HELD"), f"trade {number} funded")
        key = str(uuid.uuid4())
        until(
            lambda: act(as_seller, escrow_id, "deliver", HTTP_IDEMPOTENCY_KEY=key).status_code == 202,
            f"trade {number} delivered",
        )
        key = str(uuid.uuid4())
        until(
            lambda: act(as_buyer, escrow_id, "release", HTTP_IDEMPOTENCY_KEY=key).status_code == 202,
            f"trade {number} released",
        )
        until(lambda: state_is("RELEASED"), f"trade {number} RELEASED")
        return escrow_id
    finally:
        connections.close_all()


def test_200_trades_driven_concurrently_all_end_released(api_client, transactional_db):
    # Given: 24 users trading with each other in pairs, each holding a client per role.
    users = [UserFactory(username=f"trader-{n}") for n in range(PARTIES)]
    clients = {user.pk: api_client(user) for user in users}
    pairs = list(
        itertools.islice(itertools.cycle([(users[n], users[(n + 1) % PARTIES]) for n in range(PARTIES)]), TRADES)
    )

    # When: 12 workers drive 200 trades end to end through the API.
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(drive_trade, n, api_client(b), api_client(s), s) for n, (b, s) in enumerate(pairs)]
        escrow_ids = [future.result() for future in futures]
    settle()

    # Then: every trade is RELEASED, with exactly the six events, versions 1..6, and balanced money.
    assert len(set(escrow_ids)) == TRADES
    escrows = Escrow.objects.filter(pk__in=escrow_ids)
    assert Counter(escrows.values_list("state", flat=True)) == {"RELEASED": TRADES}
    for escrow in escrows:
        assert (
            escrow.received_minor,
            escrow.paid_out_minor,
            escrow.fee_minor,
            escrow.held_minor,
            escrow.refunded_minor,
        ) == (14999, 14625, 374, 0, 0)
    events = EscrowEvent.objects.filter(escrow_id__in=escrow_ids).order_by("escrow_id", "version")
    by_escrow: dict[str, list[tuple[int, str]]] = {}
    for event in events:
        by_escrow.setdefault(str(event.escrow_id), []).append((event.version, event.type.rsplit(".", 1)[-1]))
    assert all(timeline == list(enumerate(EXPECTED, start=1)) for timeline in by_escrow.values())
    assert len(by_escrow) == TRADES
    # The read side agrees, through the API, for every escrow.
    for escrow_id in escrow_ids:
        pair_buyer = Escrow.objects.get(pk=escrow_id).buyer_id
        entries = clients[pair_buyer].get(f"/api/v1/escrows/{escrow_id}/events").json()
        assert [(e["version"], e["type"]) for e in entries] == list(enumerate(EXPECTED, start=1))
    # No event was minted twice, nothing was handled twice, nothing was given up on.
    assert not EscrowEvent.objects.values("event_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not OutboxMessage.objects.values("event_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert (
        not ProcessedMessage.objects.values("subscriber", "event_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    )
    assert OutboxMessage.objects.filter(type="payments.v1.TransferToSeller").count() == TRADES
    assert not DeadLetter.objects.exists()
