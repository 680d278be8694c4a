"""What other apps may use of the outbox and its bus: the subscriber types and registration, appending to
the outbox, message ids and decoding, the request's trace context, the worker and its ticks, and the
tables ops read (read-only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models import Q

from apps.outbox import bus, context, tracing
from apps.outbox.bus import Delivery, ExternalEffect, Subscriber, lag, outbox_subscribers, register
from apps.outbox.messages import decode, deterministic_id, message_class, type_name
from apps.outbox.models import DeadLetter, OutboxMessage, ProcessedMessage, SubscriberCheckpoint
from apps.outbox.progress import CommandProgress
from apps.outbox.publish import aggregate_lock, outbox_append, stream_lock
from apps.outbox.worker import BusWorker, Tick, register_tick, registered_ticks

__all__ = [
    "BusWorker",
    "CommandProgress",
    "DeadLetter",
    "Delivery",
    "ExternalEffect",
    "OutboxMessage",
    "ProcessedMessage",
    "Subscriber",
    "SubscriberCheckpoint",
    "Tick",
    "aggregate_lock",
    "context",
    "decode",
    "deterministic_id",
    "lag",
    "message_class",
    "outbox_append",
    "outbox_subscribers",
    "register",
    "register_tick",
    "registered_ticks",
    "rows_after",
    "stream_lock",
    "subscriber_checkpoint",
    "subscriber_exclusive",
    "tracing",
    "type_name",
]


def subscriber_checkpoint(name: str) -> SubscriberCheckpoint:
    """The subscriber's committed position in the outbox (created at the start if it has none)."""
    return bus._checkpoint(name)


def rows_after(txid: int, row_id: int) -> Q:
    """Outbox rows after the position (txid, id), in the bus's commit order."""
    return bus._after(txid, row_id)


@contextmanager
def subscriber_exclusive(name: str) -> Iterator[bool]:
    """Holds the subscriber's drain lock (the one every drain of it takes) while the block runs; yields
    False if another process holds it."""
    with bus._exclusive(name) as acquired:
        yield acquired
