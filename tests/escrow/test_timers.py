"""The escrow's clocks: acceptance deadline -> auto-cancel of an unanswered deal, funding deadline ->
auto-cancel, inspection period -> auto-release. Time moves by
settings (FUNDING_DEADLINE_HOURS=0) or by moving a deadline column in the given step; the code is real,
with the sandbox provider completing the payout through its signed webhooks."""

from __future__ import annotations

import datetime
import threading
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from apps.escrow.errors import InvalidTransition
from apps.escrow.models import Escrow, EscrowEvent
from apps.escrow.public import dispatch
from apps.escrow.timers import fire_due_timers
from apps.outbox.messages import deterministic_id
from apps.outbox.worker import BusWorker
from apps.payments.public import sandbox_pay
from proto.escrow import v1 as escrow_v1
from tests.escrow import given


def delivered_escrow(buyer: Any, seller: Any, *, lapsed: bool) -> uuid.UUID:
    escrow_id = given.create(buyer=buyer, seller=seller)
    assert sandbox_pay(str(escrow_id)).status == "processed"
    given.send(escrow_v1.MarkDelivered(escrow_id=str(escrow_id), actor=given.user(seller)))
    assert given.snapshot(escrow_id)["state"] == "DELIVERED"
    if lapsed:
        Escrow.objects.filter(pk=escrow_id).update(inspection_deadline=timezone.now() - datetime.timedelta(seconds=1))
    return escrow_id


def test_funding_deadline_passing_cancels(settings: Any, buyer: Any, seller: Any) -> None:
    settings.FUNDING_DEADLINE_HOURS = 0
    escrow_id = given.create(buyer=buyer, seller=seller)

    assert fire_due_timers() == 1

    assert given.snapshot(escrow_id)["state"] == "CANCELLED"
    cancelled = EscrowEvent.objects.get(escrow_id=escrow_id, type="escrow.v1.EscrowCancelled")
    assert cancelled.actor_kind == "timer"
    assert cancelled.data["reason"] == "funding deadline passed"
    # fired once: a second pass finds nothing to do
    assert fire_due_timers() == 0
    assert given.event_types(escrow_id) == ["EscrowCreated", "EscrowAccepted", "EscrowCancelled"]


def test_acceptance_deadline_passing_cancels_the_unanswered_deal(settings: Any, buyer: Any, seller: Any) -> None:
    settings.ACCEPTANCE_DEADLINE_HOURS = 0
    escrow_id = given.propose(buyer=buyer, seller=seller)
    settings.ACCEPTANCE_DEADLINE_HOURS = 48
    answered = given.create(buyer=buyer, seller=seller)  # accepted in time: its funding clock runs instead
    fresh = given.propose(buyer=buyer, seller=seller)  # still within its 48 hours

    assert fire_due_timers() == 1

    assert given.snapshot(escrow_id)["state"] == "CANCELLED"
    cancelled = EscrowEvent.objects.get(escrow_id=escrow_id, type="escrow.v1.EscrowCancelled")
    assert (cancelled.actor_kind, cancelled.data["reason"]) == ("timer", "acceptance deadline passed")
    assert given.snapshot(answered)["state"] == "AWAIT_FUNDS"
    assert given.snapshot(fresh)["state"] == "AWAIT_ACCEPTANCE"
    assert fire_due_timers() == 0
    assert given.event_types(escrow_id) == ["EscrowCreated", "EscrowCancelled"]
    # the counterparty comes back too late: the deal is gone
    with pytest.raises(InvalidTransition):
        given.send(escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=given.user(seller)))


def test_the_timer_cannot_cancel_an_unanswered_deal_early(buyer: Any, seller: Any) -> None:
    escrow_id = given.propose(buyer=buyer, seller=seller)
    footprint = given.footprint()
    with pytest.raises(InvalidTransition, match="acceptance deadline has not passed"):
        given.send(escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=given.TIMER, reason="early"))
    assert given.footprint() == footprint
    assert given.snapshot(escrow_id)["state"] == "AWAIT_ACCEPTANCE"


def test_the_funding_deadline_starts_at_acceptance_not_at_creation(settings: Any, buyer: Any, seller: Any) -> None:
    # a deal proposed long ago and accepted now has its full funding time ahead
    settings.FUNDING_DEADLINE_HOURS = 1
    escrow_id = given.propose(buyer=buyer, seller=seller)
    Escrow.objects.filter(pk=escrow_id).update(created_at=timezone.now() - datetime.timedelta(hours=5))
    given.send(escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=given.user(seller)))
    assert fire_due_timers() == 0
    assert Escrow.objects.get(pk=escrow_id).funding_deadline > timezone.now() + datetime.timedelta(minutes=50)


def test_inspection_period_lapsing_releases_through_the_sandbox(buyer: Any, seller: Any) -> None:
    escrow_id = delivered_escrow(buyer, seller, lapsed=True)

    assert fire_due_timers() == 1

    e = Escrow.objects.get(pk=escrow_id)
    assert e.state == "RELEASED"
    assert e.held_minor == 0 and e.paid_out_minor + e.fee_minor == given.AMOUNT
    assert given.event_types(escrow_id)[-2:] == ["EscrowReleaseRequested", "EscrowReleased"]
    requested = EscrowEvent.objects.get(escrow_id=escrow_id, type="escrow.v1.EscrowReleaseRequested")
    assert requested.actor_kind == "timer"
    given.assert_books_balance(escrow_id)


def test_nothing_fires_before_the_deadlines(buyer: Any, seller: Any) -> None:
    awaiting = given.create(buyer=buyer, seller=seller)
    proposed = given.propose(buyer=buyer, seller=seller)
    delivered = delivered_escrow(buyer, seller, lapsed=False)
    footprint = given.footprint()

    assert fire_due_timers() == 0

    assert given.snapshot(proposed)["state"] == "AWAIT_ACCEPTANCE"
    assert given.snapshot(awaiting)["state"] == "AWAIT_FUNDS"
    assert given.snapshot(delivered)["state"] == "DELIVERED"
    assert given.footprint() == footprint


def test_a_timer_command_before_its_deadline_is_refused(buyer: Any, seller: Any) -> None:
    escrow_id = delivered_escrow(buyer, seller, lapsed=False)
    footprint = given.footprint()
    with pytest.raises(InvalidTransition, match="not lapsed"):
        given.send(escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=given.TIMER))
    assert given.footprint() == footprint


def test_disputed_escrow_is_not_released_by_the_timer(buyer: Any, seller: Any) -> None:
    escrow_id = delivered_escrow(buyer, seller, lapsed=True)
    given.send(escrow_v1.OpenDispute(escrow_id=str(escrow_id), actor=given.user(buyer), reason="broken"))
    footprint = given.footprint()
    assert fire_due_timers() == 0
    assert given.snapshot(escrow_id)["state"] == "DISPUTED"
    assert given.footprint() == footprint


def test_timer_losing_the_race_to_a_buyer_release_is_a_no_op(buyer: Any, seller: Any) -> None:
    # given: the timer has seen the escrow DELIVERED at this version...
    escrow_id = delivered_escrow(buyer, seller, lapsed=True)
    seen_version = given.snapshot(escrow_id)["version"]
    timer_command = escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=given.TIMER)
    timer_command_id = deterministic_id(escrow_id, seen_version, "inspection-lapsed")
    # ...and the buyer releases first
    given.send(escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=given.user(buyer)))
    footprint = given.footprint()

    # when the timer's command arrives, it is refused and writes nothing
    with pytest.raises(InvalidTransition):
        dispatch(timer_command, command_id=timer_command_id)
    assert given.footprint() == footprint
    assert fire_due_timers() == 0
    assert given.event_types(escrow_id).count("EscrowReleaseRequested") == 1
    assert given.snapshot(escrow_id)["state"] == "RELEASED"


def test_two_workers_firing_the_same_timer_have_one_effect(settings: Any, buyer: Any, seller: Any) -> None:
    settings.BUS_INLINE_DISPATCH = False
    settings.FUNDING_DEADLINE_HOURS = 0
    escrow_id = given.create(buyer=buyer, seller=seller)
    version = given.snapshot(escrow_id)["version"]
    command = escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=given.TIMER, reason="funding deadline passed")
    command_id = deterministic_id(escrow_id, version, "funding-deadline")

    first = dispatch(command, command_id=command_id)
    footprint = given.footprint()
    second = dispatch(command, command_id=command_id)

    assert (first.duplicate, second.duplicate) == (False, True)
    assert given.footprint() == footprint


@pytest.mark.postgres_only
def test_timer_blocked_behind_an_open_buyer_release_does_nothing(buyer: Any, seller: Any) -> None:
    """Two real connections: the buyer's release holds the escrow lock while the timer's pass starts."""
    escrow_id = delivered_escrow(buyer, seller, lapsed=True)
    fired: list[int] = []

    def timer_pass() -> None:
        try:
            fired.append(fire_due_timers())
        finally:
            connection.close()

    with transaction.atomic():
        given.send(escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=given.user(buyer)))
        worker = threading.Thread(target=timer_pass)
        worker.start()
        # The timer's pass saw DELIVERED (the release is not committed) and now waits on the lock.
        worker.join(timeout=0.5)
        assert worker.is_alive()
    worker.join(timeout=30)

    assert fired == [0]
    assert given.event_types(escrow_id).count("EscrowReleaseRequested") == 1
    assert given.snapshot(escrow_id)["state"] == "RELEASED"


def test_manage_py_fire_timers_fires_them(settings: Any, buyer: Any, seller: Any) -> None:
    settings.FUNDING_DEADLINE_HOURS = 0
    escrow_id = given.create(buyer=buyer, seller=seller)
    out = StringIO()
    call_command("fire_timers", stdout=out)
    assert "1 timers fired" in out.getvalue()
    assert given.snapshot(escrow_id)["state"] == "CANCELLED"


def test_bus_worker_tick_fires_them(buyer: Any, seller: Any) -> None:
    escrow_id = delivered_escrow(buyer, seller, lapsed=True)
    worker = BusWorker(ticks=[fire_due_timers], poll_seconds=0)
    worker.run_once()
    assert given.snapshot(escrow_id)["state"] == "RELEASED"


def test_run_bus_once_fires_them(settings: Any, buyer: Any, seller: Any) -> None:
    settings.FUNDING_DEADLINE_HOURS = 0
    escrow_id = given.create(buyer=buyer, seller=seller)
    call_command("run_bus", "--once", stdout=StringIO())
    assert given.snapshot(escrow_id)["state"] == "CANCELLED"
