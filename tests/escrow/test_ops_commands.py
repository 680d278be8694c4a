"""Staff ops commands through `dispatch`: hold / unhold, retrying a failed transfer or refund,
returning stranded money. Refused commands change nothing."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from django.utils import timezone

from apps.escrow import timers
from apps.escrow.errors import InvalidCommand, InvalidTransition, NotAllowed
from apps.escrow.models import Escrow
from apps.escrow.public import CommandResult, dispatch
from apps.outbox.messages import decode
from apps.outbox.models import OutboxMessage
from apps.payments import public as payments_public
from apps.payments.models import PaymentArtifact
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1
from tests.escrow import given
from tests.fakes.stripe_server import FakeStripe, signed_event
from tests.gateway.support import settle
from tests.helpers import act, create_escrow, pay
from tests.payments.conftest import fake_stripe  # noqa: F401  (the fixture, for the Stripe rail test)


@pytest.fixture
def _no_inline_bus(settings: Any) -> None:
    settings.BUS_INLINE_DISPATCH = False


def hold(escrow_id: uuid.UUID, staff: Any, reason: str = "seller reported for fraud") -> CommandResult:
    return given.send(escrow_v1.HoldEscrow(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason=reason))


def unhold(escrow_id: uuid.UUID, staff: Any, reason: str = "cleared") -> CommandResult:
    return given.send(escrow_v1.UnholdEscrow(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason=reason))


def retry(escrow_id: uuid.UUID, staff: Any, reason: str = "destination fixed") -> CommandResult:
    return given.send(escrow_v1.RetryPayout(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason=reason))


def return_stranded(escrow_id: uuid.UUID, staff: Any, reason: str = "late payment") -> CommandResult:
    return given.send(
        escrow_v1.ReturnStrandedFunds(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason=reason)
    )


def refused(escrow_id: uuid.UUID, error: type[Exception], send: Any) -> None:
    """`send` is refused with `error`, and neither the escrow nor any log changes."""
    before, counts = given.snapshot(escrow_id), given.footprint()
    with pytest.raises(error):
        send()
    assert given.snapshot(escrow_id) == before
    assert given.footprint() == counts


def outbound(escrow_id: uuid.UUID, kind: type[Any], after_id: int = 0) -> list[OutboxMessage]:
    name = f"payments.v1.{kind.__name__}"
    return list(OutboxMessage.objects.filter(aggregate_id=str(escrow_id), type=name, id__gt=after_id).order_by("id"))


# --- hold / unhold ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("_no_inline_bus")
def test_a_hold_refuses_release_refund_and_the_timer_until_it_is_lifted(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("DELIVERED", buyer=buyer, seller=seller, staff=staff)
    e = str(escrow_id)
    assert hold(escrow_id, staff).state == "DELIVERED"
    assert Escrow.objects.get(pk=escrow_id).on_hold_since is not None

    refused(
        escrow_id, InvalidTransition, lambda: given.send(escrow_v1.ReleaseFunds(escrow_id=e, actor=given.user(buyer)))
    )
    refused(
        escrow_id,
        InvalidTransition,
        lambda: given.send(escrow_v1.OpenDispute(escrow_id=e, actor=given.user(buyer), reason="x")),
    )
    refused(escrow_id, InvalidTransition, lambda: hold(escrow_id, staff))
    # Given a hold that began two hours ago, with the inspection period lapsing during it (the clock is
    # moved, not the code path): the timer must not release.
    now = timezone.now()
    Escrow.objects.filter(pk=escrow_id).update(
        on_hold_since=now - datetime.timedelta(hours=2), inspection_deadline=now - datetime.timedelta(hours=1)
    )
    counts = given.footprint()
    assert timers.fire_due_timers() == 0
    assert given.footprint() == counts and Escrow.objects.get(pk=escrow_id).state == "DELIVERED"

    unhold(escrow_id, staff)
    escrow = Escrow.objects.get(pk=escrow_id)
    # The clock was stopped: the deadline moved on by the time on hold (the hour left before the hold).
    assert escrow.on_hold_since is None
    assert now + datetime.timedelta(minutes=59) < escrow.inspection_deadline < now + datetime.timedelta(minutes=61)
    assert given.event_types(escrow_id)[-2:] == ["EscrowPutOnHold", "EscrowHoldLifted"]
    assert given.send(escrow_v1.ReleaseFunds(escrow_id=e, actor=given.user(buyer))).state == "RELEASING"


@pytest.mark.usefixtures("_no_inline_bus")
def test_hold_is_staff_only_needs_a_reason_and_not_in_settled_states(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    e = str(escrow_id)
    refused(
        escrow_id,
        NotAllowed,
        lambda: given.send(escrow_v1.HoldEscrow(escrow_id=e, actor=given.user(buyer), reason="mine")),
    )
    refused(escrow_id, InvalidCommand, lambda: hold(escrow_id, staff, reason="  "))
    refused(escrow_id, InvalidTransition, lambda: unhold(escrow_id, staff))
    released = given.escrow_in("RELEASED", buyer=buyer, seller=seller, staff=staff)
    refused(released, InvalidTransition, lambda: hold(released, staff))


@pytest.mark.usefixtures("_no_inline_bus")
def test_the_same_hold_command_id_twice_has_one_effect(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    command = escrow_v1.HoldEscrow(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason="checking")
    command_id = uuid.uuid4()
    dispatch(command, command_id=command_id)
    counts = given.footprint()
    assert dispatch(command, command_id=command_id).duplicate
    assert given.footprint() == counts


# --- retrying a failed transfer or refund -----------------------------------------------------------------


@pytest.mark.usefixtures("_no_inline_bus")
def test_a_failed_transfer_is_retried_once_with_a_new_payments_command_id(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("RELEASING", buyer=buyer, seller=seller, staff=staff)
    refused(escrow_id, InvalidTransition, lambda: retry(escrow_id, staff))  # nothing known to have failed
    [first] = outbound(escrow_id, payments_v1.TransferToSeller)
    given.deliver_to_escrow(
        payments_v1.TransferFailed(escrow_id=str(escrow_id), provider="stripe", reason="No such destination")
    )
    assert Escrow.objects.get(pk=escrow_id).attention == "transfer_failed"
    refused(
        escrow_id,
        NotAllowed,
        lambda: given.send(escrow_v1.RetryPayout(escrow_id=str(escrow_id), actor=given.user(buyer), reason="pay him")),
    )

    retry(escrow_id, staff)

    [again] = outbound(escrow_id, payments_v1.TransferToSeller, after_id=first.id)
    assert again.event_id != first.event_id  # so the provider sees a new idempotency key
    assert decode(again.type, again.payload) == decode(first.type, first.payload)  # same amount and fee
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.attention, escrow.pending_payout_minor) == ("RELEASING", "", given.AMOUNT)
    # The new attempt is not known to have failed: a second retry is refused.
    refused(escrow_id, InvalidTransition, lambda: retry(escrow_id, staff))
    given.transferred(escrow_id)
    assert Escrow.objects.get(pk=escrow_id).state == "RELEASED"
    given.assert_books_balance(escrow_id)


@pytest.mark.usefixtures("_no_inline_bus")
def test_a_transfer_parked_for_a_payout_destination_is_not_retried(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("RELEASING", buyer=buyer, seller=seller, staff=staff)
    given.deliver_to_escrow(
        payments_v1.TransferFailed(
            escrow_id=str(escrow_id),
            provider="stripe",
            reason="awaiting payout destination: none registered; sent once the seller registers one",
            awaiting_destination=True,
        )
    )
    refused(escrow_id, InvalidTransition, lambda: retry(escrow_id, staff))


@pytest.mark.usefixtures("_no_inline_bus")
def test_whether_a_transfer_is_parked_is_read_from_the_event_field_not_from_its_words(
    buyer: Any, seller: Any, staff: Any
) -> None:
    escrow_id = given.escrow_in("RELEASING", buyer=buyer, seller=seller, staff=staff)
    [first] = outbound(escrow_id, payments_v1.TransferToSeller)
    # A provider's refusal that happens to quote those words is a failure like any other: ops may retry it.
    given.deliver_to_escrow(
        payments_v1.TransferFailed(
            escrow_id=str(escrow_id), provider="stripe", reason="destination said: awaiting payout destination"
        )
    )
    retry(escrow_id, staff)
    [again] = outbound(escrow_id, payments_v1.TransferToSeller, after_id=first.id)

    # Parked (the field says so), whatever the words: the payout waits for the seller, no retry.
    given.deliver_to_escrow(
        payments_v1.TransferFailed(
            escrow_id=str(escrow_id), provider="stripe", reason="no destination yet", awaiting_destination=True
        )
    )
    refused(escrow_id, InvalidTransition, lambda: retry(escrow_id, staff))
    assert outbound(escrow_id, payments_v1.TransferToSeller, after_id=again.id) == []


@pytest.mark.usefixtures("_no_inline_bus")
def test_a_failed_refund_is_retried(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("REFUNDING", buyer=buyer, seller=seller, staff=staff)
    [first] = outbound(escrow_id, payments_v1.InitiateRefund)
    given.deliver_to_escrow(
        payments_v1.RefundFailed(escrow_id=str(escrow_id), provider="stripe", reason="charge disputed")
    )
    hold(escrow_id, staff)
    refused(escrow_id, InvalidTransition, lambda: retry(escrow_id, staff))  # on hold: nothing moves
    unhold(escrow_id, staff)

    retry(escrow_id, staff)

    [again] = outbound(escrow_id, payments_v1.InitiateRefund, after_id=first.id)
    assert again.event_id != first.event_id
    given.refunded(escrow_id)
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.refunded_minor, escrow.held_minor) == ("REFUNDED", given.AMOUNT, 0)


def test_a_retry_reaches_stripe_with_a_new_key_and_records_a_new_artifact(
    fake_stripe: FakeStripe,
    api_client: Any,
    buyer: Any,
    seller: Any,
    staff: Any,  # noqa: F811
) -> None:
    from tests.payments.support import released_with_a_refused_transfer
    from tests.payments.test_stripe_rail import webhook

    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = released_with_a_refused_transfer(fake_stripe, as_buyer, as_seller, seller)
    assert Escrow.objects.get(pk=escrow_id).attention == "transfer_failed"
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").exists()

    retry(uuid.UUID(escrow_id), staff)

    calls = [r for r in fake_stripe.requests if r.path == "/v1/transfers"]
    assert len(calls) == 2 and calls[0].idempotency_key != calls[1].idempotency_key
    [artifact] = PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer")
    assert artifact.idempotency_key == calls[1].idempotency_key
    [transfer] = fake_stripe.of_kind("transfer")
    assert webhook(as_buyer, *signed_event("transfer.created", transfer)).status_code == 200
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.paid_out_minor + escrow.fee_minor) == ("RELEASED", 0, 14999)


# --- stranded money ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("_no_inline_bus")
def test_a_late_payment_after_release_goes_back_to_the_buyer_and_the_state_stays(
    buyer: Any, seller: Any, staff: Any
) -> None:
    escrow_id = given.escrow_in("RELEASED", buyer=buyer, seller=seller, staff=staff)
    refused(escrow_id, InvalidTransition, lambda: return_stranded(escrow_id, staff))  # nothing stranded
    given.deliver_to_escrow(
        payments_v1.PaymentSucceeded(
            escrow_id=str(escrow_id), amount=given.money(500), provider="sandbox", provider_payment_id="pi_late"
        )
    )
    assert Escrow.objects.get(pk=escrow_id).held_minor == 500
    refused(escrow_id, InvalidCommand, lambda: return_stranded(escrow_id, staff, reason=""))
    refused(
        escrow_id,
        NotAllowed,
        lambda: given.send(
            escrow_v1.ReturnStrandedFunds(escrow_id=str(escrow_id), actor=given.user(buyer), reason="mine")
        ),
    )

    return_stranded(escrow_id, staff)

    [refund] = outbound(escrow_id, payments_v1.InitiateRefund)
    assert decode(refund.type, refund.payload).amount.amount_minor == 500
    refused(escrow_id, InvalidTransition, lambda: return_stranded(escrow_id, staff))  # already pending
    given.assert_books_balance(escrow_id)
    given.refunded(escrow_id)
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.refunded_minor, escrow.attention) == ("RELEASED", 0, 500, "")
    given.assert_books_balance(escrow_id)


@pytest.mark.usefixtures("_no_inline_bus")
def test_stranded_funds_cannot_be_taken_from_a_live_escrow(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    given.paid(escrow_id, 100)  # an extra payment while the trade is live: owed money is not stranded
    refused(escrow_id, InvalidTransition, lambda: return_stranded(escrow_id, staff))


def test_a_sandbox_payment_after_cancel_is_returned_through_the_provider(
    api_client: Any, buyer: Any, seller: Any, staff: Any
) -> None:
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="100.00")["escrow_id"]
    assert act(as_buyer, escrow_id, "cancel", {"reason": "changed my mind"}).status_code == 202
    settle()
    payments_public.sandbox_pay(escrow_id)  # the buyer's payment lands after the cancel
    settle()
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("CANCELLED", 10000, "unexpected_payment")
    assert pay(as_buyer, escrow_id).status_code == 409  # the API refuses to take more

    return_stranded(uuid.UUID(escrow_id), staff)
    settle()

    [artifact] = PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="refund")
    assert (artifact.amount_minor, artifact.status) == (10000, "succeeded")
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.refunded_minor, escrow.attention) == ("CANCELLED", 0, 10000, "")
    given.assert_books_balance(uuid.UUID(escrow_id))
