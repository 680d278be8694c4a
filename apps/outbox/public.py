"""What other apps may use of the outbox and its bus: the subscriber types and registration, appending to
the outbox, message ids and decoding, the request's trace context, the worker and its ticks, the
tables ops read (read-only), and which rows the Kafka relay has published.

Inside the app: `registry` (subscribers), `publish` (appending), `reader` (the watermark reader and
checkpoints), `apply` (one message, exactly once), `drain` (batches, the drain lock, waking on commit),
`retry` (retries and dead letters), `worker` (the bus worker and its ticks), `wakeup` (commit
announcements)."""

from __future__ import annotations

from apps.outbox import context, tracing
from apps.outbox.drain import subscriber_exclusive
from apps.outbox.messages import decode, deterministic_id, message_class, type_name
from apps.outbox.models import DeadLetter, OutboxMessage, ProcessedMessage, SubscriberCheckpoint
from apps.outbox.progress import CommandProgress
from apps.outbox.publish import aggregate_lock, batched_appends, outbox_append, stream_lock
from apps.outbox.reader import (
    Backlog,
    backlog,
    is_published,
    lag,
    published_rows,
    relay_position,
    rows_after,
    subscriber_checkpoint,
    unpublished_rows,
)
from apps.outbox.registry import Delivery, ExternalEffect, Subscriber, outbox_subscribers, register
from apps.outbox.worker import BusWorker, Tick, register_tick, registered_ticks

__all__ = [
    "Backlog",
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
    "backlog",
    "batched_appends",
    "context",
    "decode",
    "deterministic_id",
    "is_published",
    "lag",
    "message_class",
    "outbox_append",
    "outbox_subscribers",
    "published_rows",
    "register",
    "register_tick",
    "registered_ticks",
    "relay_position",
    "rows_after",
    "stream_lock",
    "subscriber_checkpoint",
    "subscriber_exclusive",
    "tracing",
    "type_name",
    "unpublished_rows",
]
