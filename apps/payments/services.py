"""Payments' writes: recording provider objects and emitting payments events, each in one transaction
that starts with the escrow's stream lock (so its events keep per-escrow order in the outbox)."""

from __future__ import annotations

import betterproto2
from django.db import transaction

from apps.core.public import money as money  # payments' modules call services.money
from apps.outbox.public import aggregate_lock, deterministic_id, outbox_append, type_name
from apps.payments.models import PaymentOrder
from proto.webhook import v1 as webhook_v1


def lock_order(escrow_id: str) -> PaymentOrder | None:
    """First write of a payments transaction for an escrow: stream lock, then the order row."""
    return aggregate_lock(str(escrow_id), PaymentOrder.objects.filter(escrow_id=escrow_id))


def emit(order: PaymentOrder, event: betterproto2.Message, *, fact: str) -> None:
    """Appends a payments event. Its id is derived from the provider fact it reports, so the same fact
    can never be emitted twice (the outbox's unique event id refuses it)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("emit must run inside the recording transaction")
    order.version += 1
    order.save(update_fields=["version"])
    outbox_append(
        message=event,
        aggregate_id=str(order.escrow_id),
        aggregate_version=order.version,
        event_id=deterministic_id("payments", fact, type_name(event)),
    )


def emit_webhook_verified(
    order: PaymentOrder, *, provider: str, event_id: str, event_type: str, provider_payment_id: str
) -> None:
    outbox_append(
        message=webhook_v1.WebhookVerified(
            provider=provider,
            provider_event_id=event_id,
            event_type=event_type,
            provider_payment_id=provider_payment_id,
            escrow_id=str(order.escrow_id),
        ),
        aggregate_id=str(order.escrow_id),
        aggregate_version=order.version,
        event_id=deterministic_id("webhook", provider, event_id),
        key=provider_payment_id or str(order.escrow_id),
    )
