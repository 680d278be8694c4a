"""Every message the payments service reacts to: the three payment commands. Each calls its provider
outside any transaction with an idempotency key derived from the command's event id (so our own retries
reach the provider as one request), then records the provider object in the subscriber's transaction
(movements.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.outbox.public import Delivery, ExternalEffect, Subscriber
from apps.payments import checkout, compliance, movements, payouts, providers, services
from apps.payments.models import PaymentArtifact, PaymentOrder, WaitingPayout
from apps.payments.providers.base import MoneyMovement, PaymentSetup, ProviderError
from proto.common.v1 import Money
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1


@dataclass(frozen=True)
class Refusal:
    """The provider permanently refused the call (card error, invalid request). Transient errors are
    not caught: they propagate so the bus retries with the same idempotency key."""

    reason: str
    # Set when the refusal is a screening block: announced as WalletScreened (compliance hold).
    blocked_address: str = ""


@dataclass(frozen=True)
class AwaitingDestination:
    """The seller has no payout destination yet: the transfer is parked, not lost (see payouts.py)."""

    reason: str


def _refusal(exc: ProviderError) -> Refusal:
    if exc.transient:
        raise exc
    return Refusal(reason=str(exc)[:1000], blocked_address=getattr(exc, "address", ""))


def _announce_block(order: PaymentOrder, refusal: Refusal, *, key: str) -> None:
    if refusal.blocked_address:
        movements.announce_block(order, reason=refusal.reason, key=key)


def _key(delivery: Delivery, purpose: str) -> str:
    return f"{purpose}-{delivery.event_id}"


def _amount(command: Any) -> Money:
    """The amount a payments command must carry. One without it fails its handler (retried, then
    dead-lettered), never moves a default of zero."""
    amount: Money | None = command.amount
    if amount is None:
        raise ValueError(f"{type(command).__name__} for escrow {command.escrow_id} carries no amount")
    return amount


# --- CreatePaymentIntent ---------------------------------------------------------------------------------


def prepare_payment(command: payments_v1.CreatePaymentIntent, delivery: Delivery) -> tuple[str, PaymentSetup | Refusal]:
    amount = _amount(command)
    provider = providers.for_new_payment(amount_minor=amount.amount_minor, currency=amount.currency)
    try:
        setup: PaymentSetup | Refusal = provider.create_payment(
            escrow_id=command.escrow_id,
            amount_minor=amount.amount_minor,
            currency=amount.currency,
            idempotency_key=_key(delivery, "payment"),
        )
    except ProviderError as exc:
        setup = _refusal(exc)
    return provider.name, setup


def apply_payment(
    command: payments_v1.CreatePaymentIntent, delivery: Delivery, prepared: tuple[str, PaymentSetup | Refusal]
) -> None:
    provider_name, setup = prepared
    amount = _amount(command)
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
    if isinstance(setup, Refusal):
        # No payment instructions: the escrow waits for its funding deadline; the event tells why.
        services.emit(
            order,
            payments_v1.PaymentFailed(escrow_id=command.escrow_id, provider=provider_name, reason=setup.reason),
            fact=f"{provider_name}:{_key(delivery, 'payment')}:refused",
        )
        return
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


def prepare_transfer(
    command: payments_v1.TransferToSeller, delivery: Delivery
) -> MoneyMovement | Refusal | AwaitingDestination:
    payment = _payment_of(command.escrow_id)
    try:
        return payouts.transfer_send(
            provider_name=payment.provider,
            escrow_id=command.escrow_id,
            seller_id=command.seller_id,
            amount_minor=_amount(command).amount_minor,
            currency=_amount(command).currency,
            source_payment_id=payment.provider_id,
            idempotency_key=_key(delivery, "transfer"),
        )
    except payouts.PayoutDestinationMissing as exc:
        return AwaitingDestination(reason=str(exc))
    except ProviderError as exc:
        return _refusal(exc)


def apply_transfer(
    command: payments_v1.TransferToSeller, delivery: Delivery, prepared: MoneyMovement | Refusal | AwaitingDestination
) -> None:
    payment = _payment_of(command.escrow_id)
    if isinstance(prepared, Refusal | AwaitingDestination):
        _transfer_not_sent(command, delivery, payment, prepared)
        return
    movements.record_movement(
        escrow_id=command.escrow_id,
        kind=PaymentArtifact.Kind.TRANSFER,
        provider_name=payment.provider,
        movement=prepared,
        key=_key(delivery, "transfer"),
        amount_minor=_amount(command).amount_minor,
        fee_minor=command.fee.amount_minor if command.fee else 0,
        currency=_amount(command).currency,
    )


def _transfer_not_sent(
    command: payments_v1.TransferToSeller,
    delivery: Delivery,
    payment: PaymentArtifact,
    outcome: Refusal | AwaitingDestination,
) -> None:
    """No money moved: the funds stay held, the escrow stays RELEASING and is flagged for ops by the
    TransferFailed. A missing destination also parks the payout, sent when the seller registers one. A
    payout screening blocked is kept as well, held (`blocked`) for the compliance review: a lift sends it
    with this command's key (screening raises before the provider is called, so that key never reached
    it), a refund after review cancels it."""
    key = _key(delivery, "transfer")
    order = services.lock_order(command.escrow_id)
    if order is None:
        raise LookupError(f"escrow {command.escrow_id} has no payment order")
    payout = {
        "escrow_id": command.escrow_id,
        "seller_id": command.seller_id,
        "provider": payment.provider,
        "source_payment_id": payment.provider_id,
        "amount_minor": _amount(command).amount_minor,
        "fee_minor": command.fee.amount_minor if command.fee else 0,
        "currency": _amount(command).currency,
    }
    if isinstance(outcome, AwaitingDestination):
        WaitingPayout.objects.get_or_create(idempotency_key=key, defaults=payout)
        reason = f"awaiting payout destination: {outcome.reason}; sent once the seller registers one"
    else:
        reason = outcome.reason
        outstanding = WaitingPayout.objects.filter(
            escrow_id=command.escrow_id,
            status__in=[
                WaitingPayout.Status.WAITING,
                WaitingPayout.Status.SENDING,
                WaitingPayout.Status.BLOCKED,
            ],
        ).exclude(idempotency_key=key)
        # One outstanding payout per escrow: a second blocked command for it (a retry that raced the hold)
        # is not kept, or a lift would send both.
        if outcome.blocked_address and not outstanding.exists():
            WaitingPayout.objects.get_or_create(
                idempotency_key=key, defaults={**payout, "status": WaitingPayout.Status.BLOCKED, "last_error": reason}
            )
    movements.transfer_failed(
        order,
        amount_minor=_amount(command).amount_minor,
        currency=_amount(command).currency,
        provider=payment.provider,
        reason=reason,
        awaiting_destination=isinstance(outcome, AwaitingDestination),
        fact=f"{payment.provider}:{key}:not_sent",
    )
    if isinstance(outcome, Refusal):
        _announce_block(order, outcome, key=key)


def prepare_refund(command: payments_v1.InitiateRefund, delivery: Delivery) -> MoneyMovement | Refusal:
    payment = _payment_of(command.escrow_id)
    over_budget = payouts.refund_budget_check(escrow_id=command.escrow_id, refund_minor=_amount(command).amount_minor)
    if over_budget:
        return Refusal(reason=over_budget)
    provider = providers.get(payment.provider)
    try:
        destination = provider.refund_destination(escrow_id=command.escrow_id, payment_id=payment.provider_id)
        if provider.screens_wallets:
            compliance.wallet_clear(
                address=destination, purpose="refund", escrow_id=command.escrow_id, chain=provider.screening_chain
            )
        return provider.create_refund(
            escrow_id=command.escrow_id,
            payment_id=payment.provider_id,
            destination=destination,
            amount_minor=_amount(command).amount_minor,
            currency=_amount(command).currency,
            idempotency_key=_key(delivery, "refund"),
        )
    except ProviderError as exc:
        return _refusal(exc)


def apply_refund(command: payments_v1.InitiateRefund, delivery: Delivery, prepared: MoneyMovement | Refusal) -> None:
    payment = _payment_of(command.escrow_id)
    if isinstance(prepared, Refusal):
        order = services.lock_order(command.escrow_id)
        if order is None:
            raise LookupError(f"escrow {command.escrow_id} has no payment order")
        services.emit(
            order,
            payments_v1.RefundFailed(
                escrow_id=command.escrow_id,
                amount=services.money(_amount(command).amount_minor, _amount(command).currency),
                provider=payment.provider,
                reason=prepared.reason,
            ),
            fact=f"{payment.provider}:{_key(delivery, 'refund')}:not_sent",
        )
        _announce_block(order, prepared, key=_key(delivery, "refund"))
        return
    movements.record_movement(
        escrow_id=command.escrow_id,
        kind=PaymentArtifact.Kind.REFUND,
        provider_name=payment.provider,
        movement=prepared,
        key=_key(delivery, "refund"),
        amount_minor=_amount(command).amount_minor,
        fee_minor=0,
        currency=_amount(command).currency,
    )


# --- EscrowComplianceHoldResolved --------------------------------------------------------------------------


def on_compliance_hold_resolved(event: escrow_v1.EscrowComplianceHoldResolved, delivery: Delivery) -> None:
    """Compliance cleared the escrow after review: deposits that screening blocked are now counted (each
    once, keyed by its on-chain transaction), and payouts that screening blocked (at release or when parked)
    wait again and are sent once this commits, each with its original key (screened again: a wallet the
    vendors still block is held again, with a new hold). Only `blocked` rows are released, so a repeat of
    this event finds nothing more to send. A REFUND decision needs nothing here: InitiateRefund follows and
    cancels those payouts."""
    if event.decision != escrow_v1.ComplianceDecision.LIFT:
        return
    order = services.lock_order(event.escrow_id)
    if order is None:
        return
    released = WaitingPayout.objects.filter(escrow_id=event.escrow_id, status=WaitingPayout.Status.BLOCKED).update(
        status=WaitingPayout.Status.WAITING, last_error="compliance hold lifted", updated_at=timezone.now()
    )
    if released:
        transaction.on_commit(lambda: payouts.waiting_payouts_send(escrow_id=event.escrow_id), robust=True)
    artifacts = (
        PaymentArtifact.objects.select_for_update()
        .filter(escrow_id=event.escrow_id, kind=PaymentArtifact.Kind.PAYMENT)
        .order_by("pk")
    )
    for artifact in artifacts:
        for deposit, seen in artifact.raw.get("blocked", {}).items():
            if deposit not in artifact.raw.get("deposits", []):
                movements.deposit_accept(order=order, artifact=artifact, deposit=deposit, obj=seen)


SUBSCRIBER = Subscriber(
    name="payments",
    appends_to_outbox=True,
    handlers={
        payments_v1.CreatePaymentIntent: ExternalEffect(prepare=prepare_payment, apply=apply_payment),
        payments_v1.TransferToSeller: ExternalEffect(prepare=prepare_transfer, apply=apply_transfer),
        payments_v1.InitiateRefund: ExternalEffect(prepare=prepare_refund, apply=apply_refund),
        escrow_v1.EscrowComplianceHoldResolved: on_compliance_hold_resolved,
        # A cancelled deal's open Stripe Checkout pages are closed (apps/payments/checkout.py).
        escrow_v1.EscrowCancelled: ExternalEffect(
            prepare=checkout.sessions_expire_prepare, apply=checkout.sessions_expire_apply
        ),
    },
)
