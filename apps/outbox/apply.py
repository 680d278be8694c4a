"""Applying one message to one subscriber exactly once: its handler's effect and its dedupe record
(`ProcessedMessage`) in the same transaction. The drain, the retries and a Kafka consumer all apply
messages through here."""

from __future__ import annotations

from typing import Any

import betterproto2
from django.db import IntegrityError, transaction

from apps.outbox import context
from apps.outbox.models import ProcessedMessage
from apps.outbox.registry import Delivery, ExternalEffect, Handler, Subscriber


def already_processed(subscriber: Subscriber, delivery: Delivery) -> bool:
    return ProcessedMessage.objects.filter(subscriber=subscriber.name, event_id=delivery.event_id).exists()


def prepare_message(subscriber: Subscriber, message: betterproto2.Message, delivery: Delivery) -> Any:
    """The outside-the-transaction half of an `ExternalEffect` handler (None for the others)."""
    handler = subscriber.handler_for(delivery.type)
    if not isinstance(handler, ExternalEffect) or already_processed(subscriber, delivery):
        return None
    with context.handling(delivery, f"{subscriber.name} prepare {delivery.type}"):
        return handler.prepare(message, delivery)


def apply_message(
    subscriber: Subscriber, message: betterproto2.Message, delivery: Delivery, prepared: Any = None
) -> bool:
    """Runs the subscriber's handler and records it as processed, in the caller's transaction.

    Returns False (and does nothing) if this subscriber already processed the message. The check reads
    before the handler writes, so the handler's first write is its own lock (see escrow's lock order);
    the unique constraint on the record is the final guard against a concurrent duplicate.
    """
    handler = subscriber.handler_for(delivery.type)
    if handler is None:
        return False
    if already_processed(subscriber, delivery):
        return False
    run_handler(subscriber, handler, message, delivery, prepared)
    ProcessedMessage.objects.create(subscriber=subscriber.name, event_id=delivery.event_id)
    return True


def run_handler(
    subscriber: Subscriber, handler: Handler, message: betterproto2.Message, delivery: Delivery, prepared: Any
) -> None:
    """The handler's effect, in its trace span, in the caller's transaction (no dedupe)."""
    with context.handling(delivery, f"{subscriber.name} {delivery.type}"):
        if isinstance(handler, ExternalEffect):
            handler.apply(message, delivery, prepared)
        else:
            handler(message, delivery)


def handle_with_dedupe(subscriber: Subscriber, message: betterproto2.Message, delivery: Delivery) -> bool:
    """One message in its own transaction, for consumers outside the outbox (Kafka). A duplicate that
    races past the existence check loses on the unique constraint and is a no-op."""
    prepared = prepare_message(subscriber, message, delivery)
    try:
        with transaction.atomic():
            return apply_message(subscriber, message, delivery, prepared)
    except IntegrityError:
        if ProcessedMessage.objects.filter(subscriber=subscriber.name, event_id=delivery.event_id).exists():
            return False
        raise
