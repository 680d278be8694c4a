"""Commands racing on one escrow, with real concurrent connections (PostgreSQL): the row lock makes one
win, and the loser either sees a duplicate or the state the winner left."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from apps.escrow.errors import EscrowError
from apps.escrow.public import CommandResult, dispatch
from proto.escrow import v1 as escrow_v1
from tests.escrow import given

pytestmark = pytest.mark.postgres_only


@pytest.fixture(autouse=True)
def _no_inline_bus(settings: Any) -> None:
    settings.BUS_INLINE_DISPATCH = False


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the calls at the same moment, each on its own connection; returns results or exceptions."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            start.wait()
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_same_command_id_from_two_connections_has_one_effect(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    command = escrow_v1.MarkDelivered(escrow_id=str(escrow_id), actor=given.user(seller))
    command_id = uuid.uuid4()

    results = race(*[lambda: dispatch(command, command_id=command_id)] * 4)

    assert all(isinstance(r, CommandResult) for r in results), results
    assert sorted(r.duplicate for r in results) == [False, True, True, True]
    assert given.event_types(escrow_id).count("EscrowDelivered") == 1
    given.assert_books_balance(escrow_id)


def test_release_and_dispute_racing_only_one_wins(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("DELIVERED", buyer=buyer, seller=seller, staff=staff)
    e = str(escrow_id)

    results = race(
        lambda: given.send(escrow_v1.ReleaseFunds(escrow_id=e, actor=given.user(buyer))),
        lambda: given.send(escrow_v1.OpenDispute(escrow_id=e, actor=given.user(seller), reason="chargeback risk")),
    )

    won = [r for r in results if isinstance(r, CommandResult)]
    lost = [r for r in results if isinstance(r, EscrowError)]
    assert len(won) == 1 and len(lost) == 1, results
    final = given.snapshot(escrow_id)
    assert final["state"] == won[0].state
    # exactly one of the two transitions is in the audit log, and money was asked for at most once
    types = given.event_types(escrow_id)
    assert ("EscrowReleaseRequested" in types) != ("EscrowDisputed" in types)
    assert final["pending_payout_minor"] in (0, given.AMOUNT)
    given.assert_books_balance(escrow_id)


def test_two_refund_cancels_racing_ask_for_the_refund_once(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    e = str(escrow_id)

    results = race(
        lambda: given.send(escrow_v1.CancelEscrow(escrow_id=e, actor=given.user(seller), reason="out of stock")),
        lambda: given.send(escrow_v1.CancelEscrow(escrow_id=e, actor=given.staff_actor(staff), reason="fraud")),
    )

    assert sum(isinstance(r, CommandResult) for r in results) == 1, results
    assert given.event_types(escrow_id).count("EscrowRefundRequested") == 1
    assert given.snapshot(escrow_id)["pending_refund_minor"] == given.AMOUNT
