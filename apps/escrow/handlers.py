"""Every message the escrow service reacts to (its commands come through `dispatch`)."""

from __future__ import annotations

from apps.escrow import reactions
from apps.outbox.public import Delivery, Subscriber
from proto.payments import v1 as payments_v1


def on_payment_succeeded(event: payments_v1.PaymentSucceeded, delivery: Delivery) -> None:
    reactions.escrow_record_payment(event=event)


def on_transfer_succeeded(event: payments_v1.TransferSucceeded, delivery: Delivery) -> None:
    reactions.escrow_record_transfer(event=event)


def on_refund_succeeded(event: payments_v1.RefundSucceeded, delivery: Delivery) -> None:
    reactions.escrow_record_refund(event=event)


def on_transfer_failed(event: payments_v1.TransferFailed, delivery: Delivery) -> None:
    reactions.escrow_record_payout_failure(
        escrow_id=event.escrow_id,
        reason="transfer_failed",
        detail=f"{event.provider_transfer_id}: {event.reason}",
        parked=event.awaiting_destination,
    )


def on_refund_failed(event: payments_v1.RefundFailed, delivery: Delivery) -> None:
    reactions.escrow_record_payout_failure(
        escrow_id=event.escrow_id, reason="refund_failed", detail=f"{event.provider_refund_id}: {event.reason}"
    )


def on_wallet_screened(event: payments_v1.WalletScreened, delivery: Delivery) -> None:
    reactions.escrow_record_screening_block(event=event)


def on_chargeback_opened(event: payments_v1.ChargebackOpened, delivery: Delivery) -> None:
    reactions.escrow_record_chargeback(event=event)


SUBSCRIBER = Subscriber(
    name="escrow",
    appends_to_outbox=True,
    handlers={
        payments_v1.PaymentSucceeded: on_payment_succeeded,
        payments_v1.TransferSucceeded: on_transfer_succeeded,
        payments_v1.RefundSucceeded: on_refund_succeeded,
        payments_v1.TransferFailed: on_transfer_failed,
        payments_v1.RefundFailed: on_refund_failed,
        payments_v1.ChargebackOpened: on_chargeback_opened,
        payments_v1.WalletScreened: on_wallet_screened,
    },
)
