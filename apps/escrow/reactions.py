"""The escrow's reactions to payments events, called by its bus subscriber (`handlers`) inside the
subscriber's transaction: money received, paid out or refunded, a failed payout, a screening block, a
chargeback."""

from __future__ import annotations

from apps.core.public import money
from apps.escrow.emit import emit
from apps.escrow.lock_objects import escrow_lock
from apps.escrow.models import Escrow
from apps.escrow.rules import COMPLIANCE_HOLD, S, settled_state
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1


def needs_attention(escrow: Escrow, reason: str, detail: str, received: Money | None = None) -> None:
    # A compliance hold outranks any later attention: only ResolveComplianceHold may clear it. The
    # EscrowNeedsAttention event below still tells ops about the new matter.
    if escrow.attention != COMPLIANCE_HOLD:
        escrow.attention = reason
        escrow.attention_detail = detail[:1000]
    emit(
        escrow,
        escrow_v1.EscrowNeedsAttention(escrow_id=str(escrow.id), reason=reason, detail=detail, received=received),
    )


def escrow_record_payment(*, event: payments_v1.PaymentSucceeded) -> None:
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    paid = event.amount or Money()
    if paid.currency != escrow.currency:
        # Money in another currency cannot be counted in this escrow's books: ops handle it.
        needs_attention(
            escrow,
            "payment_currency_mismatch",
            f"received {paid.amount_minor} {paid.currency} ({event.provider_payment_id})",
            paid,
        )
        escrow.save()
        return
    # Whatever happens next, the money is with us now and is held until someone decides.
    escrow.received_minor += paid.amount_minor
    escrow.held_minor += paid.amount_minor
    if escrow.state == S.AWAIT_FUNDS and paid.amount_minor == escrow.amount_minor:
        escrow.state = S.FUNDS_HELD
        emit(
            escrow,
            escrow_v1.EscrowFundsHeld(
                escrow_id=str(escrow.id), amount=paid, provider_payment_id=event.provider_payment_id
            ),
        )
    elif escrow.state == S.AWAIT_FUNDS:
        needs_attention(
            escrow,
            "payment_amount_mismatch",
            f"expected {escrow.amount_minor}, received {paid.amount_minor} ({event.provider_payment_id})",
            paid,
        )
    else:
        needs_attention(
            escrow, "unexpected_payment", f"payment {event.provider_payment_id} arrived in state {escrow.state}", paid
        )
    escrow.save()


def escrow_record_transfer(*, event: payments_v1.TransferSucceeded) -> None:
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    net = (event.amount or Money()).amount_minor
    fee = (event.fee or Money()).amount_minor
    if escrow.pending_payout_minor == 0 or net + fee != escrow.pending_payout_minor:
        needs_attention(
            escrow,
            "unexpected_transfer",
            f"transfer {event.provider_transfer_id} of {net}+{fee} does not match "
            f"pending payout {escrow.pending_payout_minor}",
        )
        escrow.save()
        return
    escrow.held_minor -= net + fee
    escrow.paid_out_minor += net
    escrow.fee_minor += fee
    escrow.pending_payout_minor = 0
    settle_if_done(escrow)
    emit(
        escrow,
        escrow_v1.EscrowReleased(
            escrow_id=str(escrow.id),
            paid_to_seller=money(net, escrow.currency),
            fee=money(fee, escrow.currency),
        ),
    )
    escrow.save()


def escrow_record_refund(*, event: payments_v1.RefundSucceeded) -> None:
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    amount = (event.amount or Money()).amount_minor
    if escrow.pending_refund_minor == 0 or amount != escrow.pending_refund_minor:
        needs_attention(
            escrow,
            "unexpected_refund",
            f"refund {event.provider_refund_id} of {amount} does not match "
            f"pending refund {escrow.pending_refund_minor}",
        )
        escrow.save()
        return
    escrow.held_minor -= amount
    escrow.refunded_minor += amount
    escrow.pending_refund_minor = 0
    settle_if_done(escrow)
    emit(escrow, escrow_v1.EscrowRefunded(escrow_id=str(escrow.id), amount=money(amount, escrow.currency)))
    escrow.save()


def settle_if_done(escrow: Escrow) -> None:
    """A release or refund (or both legs of a split) finished: the escrow reaches its final state."""
    if escrow.pending_payout_minor or escrow.pending_refund_minor:
        return
    if escrow.state not in (S.RELEASING, S.REFUNDING):
        # A stranded-funds refund finishing in a settled state changes no state.
        return
    escrow.state = settled_state(paid_out_minor=escrow.paid_out_minor)
    escrow.payout_parked = False
    if escrow.attention in {"transfer_failed", "refund_failed"}:
        escrow.attention = ""
        escrow.attention_detail = ""


def escrow_record_payout_failure(*, escrow_id: str, reason: str, detail: str, parked: bool = False) -> None:
    """TransferFailed / RefundFailed. `parked`: the transfer is not failed but waits for the seller's
    payout destination (TransferFailed.awaiting_destination), which decides whether ops may retry it."""
    escrow = escrow_lock(escrow_id)
    if escrow is None:
        return
    needs_attention(escrow, reason, detail)
    if reason == "transfer_failed":
        escrow.payout_parked = parked
    escrow.save()


def escrow_record_screening_block(*, event: payments_v1.WalletScreened) -> None:
    """A wallet failed sanctions / risk screening: payments moved nothing; the escrow stays where it is,
    on compliance hold, until ops decide."""
    if event.allowed:
        return
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    escrow.attention = COMPLIANCE_HOLD
    # The wallet's address stays in payments' screening record (the admin's screening results).
    escrow.attention_detail = f"wallet screening: {event.reason}"[:1000]
    emit(escrow, escrow_v1.EscrowComplianceHold(escrow_id=str(escrow.id), reason=event.reason))
    escrow.save()


def escrow_record_chargeback(*, event: payments_v1.ChargebackOpened) -> None:
    """A card chargeback: no payout may go out. Funds still held are frozen in a dispute for ops."""
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    if escrow.state in (S.FUNDS_HELD, S.DELIVERED):
        escrow.state = S.DISPUTED
        escrow.dispute_reason = f"chargeback: {event.reason}"
        system = Actor(kind=ActorKind.SYSTEM)
        emit(
            escrow,
            escrow_v1.EscrowDisputed(escrow_id=str(escrow.id), actor=system),
            actor=system,
            text={"reason": escrow.dispute_reason},
        )
    needs_attention(escrow, "chargeback", f"{event.provider_dispute_id}: {event.reason}")
    escrow.save()
