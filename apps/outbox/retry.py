"""When a handler fails: one row applied on its own with retries and backoff, then dead-lettered so the
subscriber moves on; and replaying a dead letter after a fix."""

from __future__ import annotations

import logging
import time
import traceback

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.outbox import messages, outage
from apps.outbox.apply import apply_message, prepare_message
from apps.outbox.models import DeadLetter, OutboxMessage
from apps.outbox.reader import save_checkpoint
from apps.outbox.registry import Delivery, Subscriber, get_subscriber

log = logging.getLogger(__name__)


def deliver(subscriber: Subscriber, row: OutboxMessage, first_failure: Exception | None = None) -> bool:
    """Applies one row with retries; dead-letters it when they run out. The checkpoint moves in the
    same transaction as the effect (or the dead letter). `first_failure`: the row's first attempt
    already failed (in a batch)."""
    delivery = Delivery.of(row)
    if first_failure is not None and outage.connection_lost(first_failure):
        raise outage.DatabaseUnavailable("database connection lost") from first_failure
    attempts = 1 if first_failure is not None else 0
    error = first_failure
    while True:
        if error is None:
            attempts += 1
            try:
                message = messages.decode(row.type, row.payload)
                prepared = prepare_message(subscriber, message, delivery)
                with transaction.atomic():
                    applied = apply_message(subscriber, message, delivery, prepared)
                    save_checkpoint(subscriber.name, row)
                return applied
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                if outage.connection_lost(exc):
                    # Not the handler's fault: the row stays where it is (checkpoint unmoved) for the next pass.
                    raise outage.DatabaseUnavailable("database connection lost") from exc
                error = exc
        if attempts >= settings.BUS_MAX_ATTEMPTS:
            _dead_letter(subscriber, row, attempts, error)
            return False
        delay = settings.BUS_RETRY_BASE_SECONDS * (4 ** (attempts - 1))
        log.warning(
            "bus handler failed, will retry",
            extra={
                "subscriber": subscriber.name,
                "type": row.type,
                "escrow_id": row.aggregate_id,
                "event_id": str(row.event_id),
                "attempt": attempts,
                "retry_in_s": delay,
                "error": repr(error),
            },
        )
        time.sleep(delay)
        error = None


def _dead_letter(subscriber: Subscriber, row: OutboxMessage, attempts: int, exc: Exception) -> None:
    error = "".join(traceback.format_exception(exc))[-8000:]
    with transaction.atomic():
        DeadLetter.objects.get_or_create(
            subscriber=subscriber.name,
            event_id=row.event_id,
            defaults={
                "message": row,
                "type": row.type,
                "aggregate_id": row.aggregate_id,
                "attempts": attempts,
                "error": error,
            },
        )
        save_checkpoint(subscriber.name, row)
    log.error(
        "bus message dead-lettered",
        extra={
            "subscriber": subscriber.name,
            "type": row.type,
            "escrow_id": row.aggregate_id,
            "event_id": str(row.event_id),
            "attempts": attempts,
            "error": repr(exc),
        },
    )


def replay_dead_letter(dead_letter: DeadLetter) -> bool:
    """Runs the handler again for a dead letter (after a fix). Raises if it still fails."""
    subscriber = get_subscriber(dead_letter.subscriber)
    row = dead_letter.message
    message = messages.decode(row.type, row.payload)
    prepared = prepare_message(subscriber, message, Delivery.of(row))
    with transaction.atomic():
        locked = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
        if locked.status != DeadLetter.Status.OPEN:
            return False
        apply_message(subscriber, message, Delivery.of(row), prepared)
        locked.status = DeadLetter.Status.REPLAYED
        locked.resolved_at = timezone.now()
        locked.save(update_fields=["status", "resolved_at"])
    return True
