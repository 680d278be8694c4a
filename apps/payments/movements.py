"""The recording of money movements: every provider object payments asked for or was told about, and the
payments events that report it. One module for it, called by the command handlers (handlers.py), the
payouts that waited (payouts.py), the webhooks (webhooks.py) and the hosted checkout (checkout.py), so a
transfer is recorded and announced the same way whichever path sent it.

Everything here runs inside the caller's transaction, after `services.lock_order` (each function takes
the lock itself where it is the first write). Providers are only told after commit (`after_commit`).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.payments import providers, services
from apps.payments.models import PaymentArtifact, PaymentOrder, WebhookEvent
from apps.payments.providers.base import MoneyMovement, ProviderEvent
from apps.payments.providers.sandbox import SandboxProvider
from proto.payments import v1 as payments_v1


def record_movement(
    *,
    escrow_id: str,
    kind: str,
    provider_name: str,
    movement: MoneyMovement,
    key: str,
    amount_minor: int,
    fee_minor: int,
    currency: str,
) -> None:
    """A transfer or refund the provider accepted: its artifact (keyed by the command's idempotency key, so
    a repeat records nothing new). Its outcome arrives later, by webhook."""
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
        transaction.on_commit(lambda: provider.after_commit(kind=kind, movement=movement), robust=True)


def transfer_failed(
    order: PaymentOrder,
    *,
    amount_minor: int,
    currency: str,
    provider: str,
    reason: str,
    fact: str,
    provider_transfer_id: str = "",
    awaiting_destination: bool = False,
) -> None:
    """TransferFailed: no money reached the seller (refused, reversed, or parked). `awaiting_destination`
    says, as a field and not in words, that the payout is parked until the seller registers where to be
    paid (escrow then does not offer ops a retry, and the seller is told how to fix it)."""
    services.emit(
        order,
        payments_v1.TransferFailed(
            escrow_id=str(order.escrow_id),
            amount=services.money(amount_minor, currency),
            provider=provider,
            provider_transfer_id=provider_transfer_id,
            reason=reason,
            awaiting_destination=awaiting_destination,
        ),
        fact=fact,
    )


def announce_block(order: PaymentOrder, *, reason: str, key: str) -> None:
    """A wallet screening blocked: WalletScreened(allowed=false), which puts the escrow on compliance hold.
    The wallet's address stays in payments' screening record (WalletScreening); no message carries it."""
    services.emit(
        order,
        payments_v1.WalletScreened(escrow_id=str(order.escrow_id), allowed=False, reason=reason),
        fact=f"{key}:screening_blocked",
    )


def webhook_verified(record: WebhookEvent, event: ProviderEvent, order: PaymentOrder, payment_id: str) -> None:
    services.emit_webhook_verified(
        order, provider=record.provider, event_id=event.id, event_type=event.type, provider_payment_id=payment_id
    )


def amount_of(obj: dict[str, Any], *keys: str) -> int | None:
    """The first of `keys` that holds a whole, non-negative amount of minor units (a provider's object)."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def deposit_accept(
    *,
    order: PaymentOrder,
    artifact: PaymentArtifact,
    deposit: str,
    obj: dict[str, Any],
    verified: tuple[WebhookEvent, ProviderEvent] | None = None,
) -> bool:
    """Counts one more deposit into an escrow's wallet: a second deposit after the escrow was funded, or a
    deposit screening blocked that compliance then cleared. Money that arrived is never dropped: it is
    reported as a PaymentSucceeded and the escrow books it (held, and in front of ops when unexpected).
    The caller holds the order and artifact locks."""
    amount = amount_of(obj, "amount_received", "amount")
    currency = obj.get("currency")
    if amount is None or not isinstance(currency, str):
        raise ValueError(f"deposit {deposit} without a valid amount or currency")
    first = artifact.status != PaymentArtifact.Status.SUCCEEDED
    artifact.status = PaymentArtifact.Status.SUCCEEDED
    artifact.raw = {**artifact.raw, "deposits": [*artifact.raw.get("deposits", []), deposit]}
    artifact.save(update_fields=["status", "raw", "updated_at"])
    if verified is not None:
        webhook_verified(verified[0], verified[1], order, artifact.provider_id)
    services.emit(
        order,
        payments_v1.PaymentSucceeded(
            escrow_id=str(order.escrow_id),
            amount=services.money(amount, currency.upper()),
            provider=artifact.provider,
            provider_payment_id=artifact.provider_id if first else f"{artifact.provider_id}:{deposit}",
        ),
        # Keyed by the on-chain deposit: a redelivered notification can never count it twice.
        fact=f"{artifact.provider}:{artifact.provider_id}:{deposit}:succeeded",
    )
    return True


# Stripe re-sends a webhook until it is acknowledged; the sandbox stands in for Stripe, so it must too.
# Its simulated webhook goes out after the transaction that recorded the transfer or refund commits: a
# process killed in between (found by tests/faults/test_worker_kill.py) left the escrow in RELEASING or
# REFUNDING for good. The bus worker's tick sends what is still owed after this long; the receiving side
# dedupes by event id, so a webhook that did arrive meanwhile is a no-op.
OWED_AFTER_SECONDS = 5.0


def deliver_owed_webhooks(*, limit: int = 100) -> int:
    """Sends the simulated webhook of every sandbox transfer or refund still pending after
    OWED_AFTER_SECONDS. Returns how many it sent."""
    cutoff = timezone.now() - datetime.timedelta(seconds=OWED_AFTER_SECONDS)
    owed = (
        PaymentArtifact.objects.filter(
            provider=SandboxProvider.name,
            status=PaymentArtifact.Status.PENDING,
            created_at__lte=cutoff,
            kind__in=[PaymentArtifact.Kind.TRANSFER, PaymentArtifact.Kind.REFUND],
        )
        .order_by("created_at")
        .values_list("kind", "provider_id", "raw")[:limit]
    )
    provider = providers.get(SandboxProvider.name)
    sent = 0
    for kind, provider_id, raw in owed:
        provider.after_commit(kind=kind, movement=MoneyMovement(provider_id=provider_id, raw=raw))
        sent += 1
    return sent
