"""How the escrow reacts to payments events (delivered through its subscriber, with dedupe), and the
money invariant after every step."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from apps.escrow.models import Escrow
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1
from tests.escrow import given


@pytest.fixture(autouse=True)
def _no_inline_bus(settings: Any) -> None:
    settings.BUS_INLINE_DISPATCH = False


def test_full_payment_holds_funds_and_the_books_balance_at_each_step(buyer: Any, seller: Any) -> None:
    escrow_id = given.create(buyer=buyer, seller=seller)
    given.assert_books_balance(escrow_id)
    given.paid(escrow_id)
    given.assert_books_balance(escrow_id)
    given.send(escrow_v1.MarkDelivered(escrow_id=str(escrow_id), actor=given.user(seller)))
    given.send(escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=given.user(buyer)))
    given.assert_books_balance(escrow_id)
    given.transferred(escrow_id)
    given.assert_books_balance(escrow_id)

    e = Escrow.objects.get(pk=escrow_id)
    assert e.state == "RELEASED"
    assert (e.received_minor, e.held_minor, e.refunded_minor) == (given.AMOUNT, 0, 0)
    assert e.paid_out_minor + e.fee_minor == given.AMOUNT and e.fee_minor == given.AMOUNT * e.fee_bps // 10_000


def test_the_same_payments_event_twice_is_counted_once(buyer: Any, seller: Any) -> None:
    escrow_id = given.create(buyer=buyer, seller=seller)
    event = payments_v1.PaymentSucceeded(
        escrow_id=str(escrow_id), amount=given.money(given.AMOUNT), provider="sandbox", provider_payment_id="pi_1"
    )
    event_id = uuid.uuid4()
    assert given.deliver_to_escrow(event, event_id=event_id) is True
    footprint = given.footprint()
    assert given.deliver_to_escrow(event, event_id=event_id) is False
    assert given.footprint() == footprint
    assert given.snapshot(escrow_id)["held_minor"] == given.AMOUNT


def test_amount_mismatch_stays_awaiting_funds_for_ops_with_the_money_held(buyer: Any, seller: Any) -> None:
    escrow_id = given.create(buyer=buyer, seller=seller)
    given.paid(escrow_id, amount_minor=given.AMOUNT - 1)

    after = given.snapshot(escrow_id)
    assert after["state"] == "AWAIT_FUNDS"
    assert after["attention"] == "payment_amount_mismatch"
    assert (after["received_minor"], after["held_minor"]) == (given.AMOUNT - 1, given.AMOUNT - 1)
    assert given.event_types(escrow_id) == ["EscrowCreated", "EscrowAccepted", "EscrowNeedsAttention"]
    given.assert_books_balance(escrow_id)

    # Cancelling now must give the partial payment back, not just close the escrow.
    mark = given.last_outbox_id()
    given.send(escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=given.user(buyer), reason="wrong amount"))
    after = given.snapshot(escrow_id)
    assert after["state"] == "REFUNDING" and after["pending_refund_minor"] == given.AMOUNT - 1
    assert "InitiateRefund" in given.outbox_types_since(escrow_id, mark)
    given.refunded(escrow_id)
    assert given.snapshot(escrow_id)["state"] == "REFUNDED"
    given.assert_books_balance(escrow_id)


def test_currency_mismatch_stays_awaiting_funds_and_is_not_booked_in_the_escrow_currency(
    buyer: Any, seller: Any
) -> None:
    escrow_id = given.create(buyer=buyer, seller=seller)
    given.paid(escrow_id, currency="EUR")

    after = given.snapshot(escrow_id)
    assert after["state"] == "AWAIT_FUNDS"
    assert after["attention"] == "payment_currency_mismatch"
    # EUR cents cannot be added to USD books: the money is reported to ops in the event, not counted.
    assert (after["received_minor"], after["held_minor"]) == (0, 0)
    assert given.event_types(escrow_id) == ["EscrowCreated", "EscrowAccepted", "EscrowNeedsAttention"]
    given.assert_books_balance(escrow_id)


def test_payment_after_cancellation_is_held_and_flagged(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("CANCELLED", buyer=buyer, seller=seller, staff=staff)
    given.paid(escrow_id)
    after = given.snapshot(escrow_id)
    assert after["state"] == "CANCELLED" and after["attention"] == "unexpected_payment"
    assert after["held_minor"] == given.AMOUNT
    given.assert_books_balance(escrow_id)


@pytest.mark.parametrize("kind", ["transfer", "refund"])
def test_unexpected_transfer_or_refund_amount_changes_no_money(kind: str, buyer: Any, seller: Any, staff: Any) -> None:
    state = "RELEASING" if kind == "transfer" else "REFUNDING"
    escrow_id = given.escrow_in(state, buyer=buyer, seller=seller, staff=staff)
    before = given.snapshot(escrow_id)
    if kind == "transfer":
        event: Any = payments_v1.TransferSucceeded(
            escrow_id=str(escrow_id), amount=given.money(1), fee=given.money(0), provider_transfer_id="tr_x"
        )
    else:
        event = payments_v1.RefundSucceeded(
            escrow_id=str(escrow_id), amount=given.money(given.AMOUNT + 100), provider_refund_id="re_x"
        )
    given.deliver_to_escrow(event)

    after = given.snapshot(escrow_id)
    assert after["state"] == state
    assert after["attention"] == f"unexpected_{kind}"
    money = (
        "received_minor",
        "held_minor",
        "paid_out_minor",
        "refunded_minor",
        "fee_minor",
        "pending_payout_minor",
        "pending_refund_minor",
    )
    assert {k: after[k] for k in money} == {k: before[k] for k in money}
    assert given.event_types(escrow_id)[-1] == "EscrowNeedsAttention"


@pytest.mark.parametrize("state", ["FUNDS_HELD", "DELIVERED"])
def test_chargeback_while_funds_held_freezes_them_in_a_dispute(state: str, buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in(state, buyer=buyer, seller=seller, staff=staff)
    given.deliver_to_escrow(
        payments_v1.ChargebackOpened(
            escrow_id=str(escrow_id), amount=given.money(given.AMOUNT), provider_dispute_id="dp_1", reason="fraudulent"
        )
    )
    after = given.snapshot(escrow_id)
    assert after["state"] == "DISPUTED"
    assert after["attention"] == "chargeback"
    assert given.event_types(escrow_id)[-2:] == ["EscrowDisputed", "EscrowNeedsAttention"]
    given.assert_books_balance(escrow_id)
    # Timers stop: the funds are no longer releasable by the buyer either.
    with pytest.raises(Exception, match="not allowed"):
        given.send(escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=given.user(buyer)))


@pytest.mark.parametrize(
    ("state", "event", "reason"),
    [
        ("RELEASING", payments_v1.TransferFailed, "transfer_failed"),
        ("REFUNDING", payments_v1.RefundFailed, "refund_failed"),
    ],
)
def test_payout_failure_keeps_state_and_asks_ops(
    state: str, event: Any, reason: str, buyer: Any, seller: Any, staff: Any
) -> None:
    escrow_id = given.escrow_in(state, buyer=buyer, seller=seller, staff=staff)
    before = given.snapshot(escrow_id)
    given.deliver_to_escrow(event(escrow_id=str(escrow_id), amount=given.money(1), reason="account closed"))
    after = given.snapshot(escrow_id)
    assert after["state"] == state and after["attention"] == reason
    assert after["held_minor"] == before["held_minor"] == given.AMOUNT
    assert after["pending_payout_minor"] == before["pending_payout_minor"]
    assert after["pending_refund_minor"] == before["pending_refund_minor"]
    given.assert_books_balance(escrow_id)

    # a later success settles it and clears the flag
    (given.transferred if state == "RELEASING" else given.refunded)(escrow_id)
    settled = given.snapshot(escrow_id)
    assert settled["state"] == ("RELEASED" if state == "RELEASING" else "REFUNDED")
    assert settled["attention"] == "" and settled["held_minor"] == 0


def test_split_where_the_refund_lands_before_the_transfer(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("DISPUTED", buyer=buyer, seller=seller, staff=staff)
    seller_gross = 10_000
    given.send(
        escrow_v1.ResolveDispute(
            escrow_id=str(escrow_id),
            actor=given.staff_actor(staff),
            outcome=escrow_v1.DisputeOutcome.SPLIT,
            seller_amount=given.money(seller_gross),
        )
    )
    given.assert_books_balance(escrow_id)

    given.refunded(escrow_id)
    mid = given.snapshot(escrow_id)
    # half done: still waiting for the seller's leg
    assert mid["state"] == "RELEASING"
    assert (mid["refunded_minor"], mid["held_minor"]) == (given.AMOUNT - seller_gross, seller_gross)
    given.assert_books_balance(escrow_id)

    given.transferred(escrow_id)
    done = given.snapshot(escrow_id)
    assert done["state"] == "RELEASED"
    assert done["held_minor"] == 0
    assert done["paid_out_minor"] + done["fee_minor"] == seller_gross
    assert done["refunded_minor"] == given.AMOUNT - seller_gross
    given.assert_books_balance(escrow_id)
    assert given.event_types(escrow_id)[-2:] == ["EscrowRefunded", "EscrowReleased"]


def test_events_for_an_unknown_escrow_are_ignored(buyer: Any) -> None:
    given.paid(uuid.uuid4())
    assert given.footprint()[0] == 0
