"""Every message the payments service reacts to: the three payment commands. Each calls its provider
outside any transaction with an idempotency key derived from the command's event id (so our own retries
reach the provider as one request), then records the provider object in the subscriber's transaction."""

from __future__ import annotations

from django.db import transaction

from apps.outbox.bus import Delivery, ExternalEffect, Subscriber
from apps.payments import providers, services
from apps.payments.models import PaymentArtifact, PaymentOrder
from apps.payments.providers.base import MoneyMovement, PaymentSetup
from proto.payments import v1 as payments_v1


def _key(delivery: Delivery, purpose: str) -> str:
    return f"{purpose}-{delivery.event_id}"


# --- CreatePaymentIntent ---------------------------------------------------------------------------------


def prepare_payment(command: payments_v1.CreatePaymentIntent, delivery: Delivery) -> tuple[str, PaymentSetup]:
    amount = command.amount
    provider = providers.for_new_payment(amount_minor=amount.amount_minor, currency=amount.currency)
    setup = provider.create_payment(
        escrow_id=command.escrow_id,
        amount_minor=amount.amount_minor,
        currency=amount.currency,
        idempotency_key=_key(delivery, "payment"),
    )
    return provider.name, setup


def apply_payment(command: payments_v1.CreatePaymentIntent, delivery: Delivery,
                  prepared: tuple[str, PaymentSetup]) -> None:
    provider_name, setup = prepared
    amount = command.amount
    services.lock_order(command.escrow_id)
    order, _ = PaymentOrder.objects.get_or_create(
        escrow_id=command.escrow_id,
        defaults={
            "buyer_id": command.buyer_id,
            "seller_id": command.seller_id,
            "amount_minor": amount.amount_minor,
            "currency": amount.currency,
            "provider": provider_name,
        },
    )
    PaymentArtifact.objects.get_or_create(
        idempotency_key=_key(delivery, "payment"),
        defaults={
            "escrow_id": order.escrow_id,
            "kind": PaymentArtifact.Kind.PAYMENT,
            "provider": provider_name,
            "provider_id": setup.provider_payment_id,
            "amount_minor": amount.amount_minor,
            "currency": amount.currency,
            "client_secret": setup.client_secret,
            "deposit_address": setup.deposit_address,
            "raw": setup.raw,
        },
    )
    services.emit(
        order,
        payments_v1.PaymentInstructionsIssued(
            escrow_id=command.escrow_id, provider=provider_name, provider_payment_id=setup.provider_payment_id
        ),
        fact=f"{provider_name}:{setup.provider_payment_id}:issued",
    )


# --- TransferToSeller and InitiateRefund -----------------------------------------------------------------


def _payment_of(escrow_id: str) -> PaymentArtifact:
    payment = (
        PaymentArtifact.objects.filter(
            escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT, status=PaymentArtifact.Status.SUCCEEDED
        )
        .order_by("created_at")
        .first()
    )
    if payment is None:
        raise LookupError(f"escrow {escrow_id} has no succeeded payment to pay out from")
    return payment


def prepare_transfer(command: payments_v1.TransferToSeller, delivery: Delivery) -> MoneyMovement:
    payment = _payment_of(command.escrow_id)
    return providers.get(payment.provider).create_transfer(
        escrow_id=command.escrow_id,
        seller_id=command.seller_id,
        amount_minor=command.amount.amount_minor,
        currency=command.amount.currency,
        source_payment_id=payment.provider_id,
        idempotency_key=_key(delivery, "transfer"),
    )


def apply_transfer(command: payments_v1.TransferToSeller, delivery: Delivery, prepared: MoneyMovement) -> None:
    payment = _payment_of(command.escrow_id)
    _record_movement(
        escrow_id=command.escrow_id,
        kind=PaymentArtifact.Kind.TRANSFER,
        provider_name=payment.provider,
        movement=prepared,
        key=_key(delivery, "transfer"),
        amount_minor=command.amount.amount_minor,
        fee_minor=command.fee.amount_minor if command.fee else 0,
        currency=command.amount.currency,
    )


def prepare_refund(command: payments_v1.InitiateRefund, delivery: Delivery) -> MoneyMovement:
    payment = _payment_of(command.escrow_id)
    return providers.get(payment.provider).create_refund(
        escrow_id=command.escrow_id,
        payment_id=payment.provider_id,
        amount_minor=command.amount.amount_minor,
        currency=command.amount.currency,
        idempotency_key=_key(delivery, "refund"),
    )


def apply_refund(command: payments_v1.InitiateRefund, delivery: Delivery, prepared: MoneyMovement) -> None:
    payment = _payment_of(command.escrow_id)
    _record_movement(
        escrow_id=command.escrow_id,
        kind=PaymentArtifact.Kind.REFUND,
        provider_name=payment.provider,
        movement=prepared,
        key=_key(delivery, "refund"),
        amount_minor=command.amount.amount_minor,
        fee_minor=0,
        currency=command.amount.currency,
    )


def _record_movement(*, escrow_id: str, kind: str, provider_name: str, movement: MoneyMovement, key: str,
                     amount_minor: int, fee_minor: int, currency: str) -> None:
    services.lock_order(escrow_id)
    _, created = PaymentArtifact.objects.get_or_create(
        idempotency_key=key,
        defaults={
            "escrow_id": escrow_id,
            "kind": kind,
            "provider": provider_name,
            "provider_id": movement.provider_id,
            "amount_minor": amount_minor,
            "fee_minor": fee_minor,
            "currency": currency,
            "raw": movement.raw,
        },
    )
    if created:
        provider = providers.get(provider_name)
        transaction.on_commit(
            lambda: provider.after_commit(kind=kind, provider_id=movement.provider_id), robust=True
        )


SUBSCRIBER = Subscriber(
    name="payments",
    handlers={
        payments_v1.CreatePaymentIntent: ExternalEffect(prepare=prepare_payment, apply=apply_payment),
        payments_v1.TransferToSeller: ExternalEffect(prepare=prepare_transfer, apply=apply_transfer),
        payments_v1.InitiateRefund: ExternalEffect(prepare=prepare_refund, apply=apply_refund),
    },
)
