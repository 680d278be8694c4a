"""A test-only subscriber, wired into the real bus with `register`, and helpers to write outbox rows.

The recorder's effect is a real database write in the handler's transaction (an atomic increment of a
counter row), so "exactly once" and "rolled back on failure" are checked in the database, not in memory.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import betterproto2
from django.db import transaction
from django.db.models import F
from django.test import override_settings

from apps.outbox.models import OutboxMessage, SubscriberCheckpoint
from apps.outbox.public import Delivery, Subscriber, register
from apps.outbox.publish import outbox_append, stream_lock
from apps.outbox.registry import unregister
from proto.escrow import v1 as escrow_v1

EVENT_TYPES: tuple[type[betterproto2.Message], ...] = (
    escrow_v1.EscrowCreated,
    escrow_v1.EscrowDelivered,
    escrow_v1.EscrowDisputed,
)


class Recorder:
    """Records what one test subscriber committed, and can be told to fail on chosen messages."""

    def __init__(self, name: str, types: tuple[type[betterproto2.Message], ...] = EVENT_TYPES) -> None:
        self.name = name
        self.counter_name = f"effects:{name}"
        self.types = types
        self.failing: set[uuid.UUID] = set()
        self.calls: Counter[uuid.UUID] = Counter()
        self.committed: list[tuple[str, int, uuid.UUID]] = []
        self._guard = threading.Lock()

    def handle(self, message: betterproto2.Message, delivery: Delivery) -> None:
        with self._guard:
            self.calls[delivery.event_id] += 1
        # The effect first, then the failure: a failing attempt must leave no effect behind.
        SubscriberCheckpoint.objects.filter(subscriber=self.counter_name).update(last_id=F("last_id") + 1)
        if delivery.event_id in self.failing:
            raise RuntimeError(f"poison message {delivery.event_id}")
        entry = (delivery.aggregate_id, delivery.aggregate_version, delivery.event_id)
        transaction.on_commit(lambda: self._commit(entry))

    def _commit(self, entry: tuple[str, int, uuid.UUID]) -> None:
        with self._guard:
            self.committed.append(entry)

    def subscriber(self) -> Subscriber:
        return Subscriber(name=self.name, handlers={cls: self.handle for cls in self.types})

    def effects(self) -> int:
        """How many handler effects the database holds."""
        return SubscriberCheckpoint.objects.get(subscriber=self.counter_name).last_id

    def versions_by_escrow(self) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}
        for aggregate_id, version, _ in self.committed:
            seen.setdefault(aggregate_id, []).append(version)
        return seen


@contextmanager
def installed(*recorders: Recorder, inline: bool = False, **overrides: Any) -> Iterator[list[Subscriber]]:
    """Registers the recorders as the only outbox subscribers of this process, for one test."""
    subs = [r.subscriber() for r in recorders]
    for recorder, sub in zip(recorders, subs, strict=True):
        SubscriberCheckpoint.objects.get_or_create(subscriber=recorder.counter_name)
        register(sub)
    try:
        with override_settings(BUS_OUTBOX_SUBSCRIBERS=[s.name for s in subs], BUS_INLINE_DISPATCH=inline, **overrides):
            yield subs
    finally:
        for sub in subs:
            unregister(sub.name)


def append_event(
    escrow_id: str, version: int, cls: type[betterproto2.Message] = escrow_v1.EscrowDelivered
) -> OutboxMessage:
    """Appends one event to the outbox; call inside a transaction (as a command handler does)."""
    return outbox_append(message=cls(escrow_id=escrow_id), aggregate_id=escrow_id, aggregate_version=version)


def publish_event(
    escrow_id: str, version: int, cls: type[betterproto2.Message] = escrow_v1.EscrowDelivered
) -> OutboxMessage:
    """One committed transaction holding one event, written the way the escrow service writes."""
    with transaction.atomic():
        stream_lock(escrow_id)
        return append_event(escrow_id, version, cls)


def new_escrow_id() -> str:
    return str(uuid.uuid4())


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 20.0, step: Callable[[], object] | None = None
) -> bool:
    """Bounded wait for an effect that happens in another thread or needs a drain to repeat.

    `step` (e.g. a drain) runs between checks: on a shared PostgreSQL server an unrelated open
    transaction can hold the xid watermark back for a moment, which delays delivery but never skips.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if step is not None:
            step()
        time.sleep(0.01)
    return condition()
