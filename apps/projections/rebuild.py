"""Blue/green rebuild of a projection set from the event log (the outbox rows of escrow.events.v1).

1. Empty the idle colour and replay, in delivery order (txid, id), every event up to the live
   subscriber's checkpoint as it was when we started. The API keeps reading the live colour and the
   live subscriber keeps writing it.
2. Take the subscriber's drain lock (the same one the bus uses, advisory on PostgreSQL), so the live
   checkpoint stops moving; replay the events it passed meanwhile; flip the pointer; commit. Readers
   switch on their next query; nobody ever reads a half-built table.

Only rows below the live checkpoint are replayed: the bus's watermark already proved every one of them
settled, so no in-flight transaction can be skipped.

When the projections are fed from Kafka (`projections` not in BUS_OUTBOX_SUBSCRIBERS: `manage.py consume
projections` runs them), the bus checkpoint says nothing; what the live consumer has applied is its dedupe
records (ProcessedMessage). Then:

1. Read the set of applied event ids once (one statement, so for every escrow a prefix of its events:
   the consumer applies an escrow's events in order, from one partition) and replay exactly those events
   of the log, in delivery order.
2. Take the pointer row FOR UPDATE (the live handler share-locks it in its transaction, so the consumer
   now waits), read the applied set again, replay the events applied since (for each escrow, the next
   events in order), flip, commit. The consumer goes on into the new colour.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.outbox.public import (
    Delivery,
    OutboxMessage,
    ProcessedMessage,
    SubscriberCheckpoint,
    decode,
    message_class,
    subscriber_exclusive,
)
from apps.projections.handlers import FOLDS, SUBSCRIBER
from apps.projections.models import ActiveGeneration, ProjectionRebuild
from apps.projections.tables import ESCROWS, PROJECTION_SETS, Tables, other_color, tables_for

Progress = Callable[[int, int], None]
BATCH = 500


@dataclass(frozen=True)
class RebuildSummary:
    name: str
    from_color: str
    to_color: str
    generation: int
    events: int
    rows: dict[str, int]


def _position(name: str) -> tuple[int, int]:
    checkpoint = SubscriberCheckpoint.objects.filter(subscriber=name).first()
    return (checkpoint.last_txid, checkpoint.last_id) if checkpoint else (0, 0)


def _events_between(after: tuple[int, int], upto: tuple[int, int]) -> Q:
    return (
        (Q(txid__gt=after[0]) | Q(txid=after[0], id__gt=after[1]))
        & (Q(txid__lt=upto[0]) | Q(txid=upto[0], id__lte=upto[1]))
        & Q(topic__in=SUBSCRIBER.topics, type__in=SUBSCRIBER.types)
    )


def _replay(
    tables: Tables, after: tuple[int, int], upto: tuple[int, int], progress: Progress | None, done: int, total: int
) -> int:
    """Folds every event in (after, upto] into `tables`, in batches of one transaction each."""
    position = after
    while True:
        rows = list(OutboxMessage.objects.filter(_events_between(position, upto)).order_by("txid", "id")[:BATCH])
        if not rows:
            return done
        with transaction.atomic():
            for row in rows:
                fold = FOLDS[message_class(row.type)]
                fold(decode(row.type, row.payload), Delivery.of(row), tables)
        done += len(rows)
        position = (rows[-1].txid, rows[-1].id)
        if progress is not None:
            progress(done, max(total, done))


def _count(after: tuple[int, int], upto: tuple[int, int]) -> int:
    return OutboxMessage.objects.filter(_events_between(after, upto)).count()


def fed_from_kafka() -> bool:
    """The deployment's projections are consumed from Kafka, not fed by this database's outbox bus."""
    return SUBSCRIBER.name not in settings.BUS_OUTBOX_SUBSCRIBERS


def _applied_ids() -> set[uuid.UUID]:
    return set(ProcessedMessage.objects.filter(subscriber=SUBSCRIBER.name).values_list("event_id", flat=True))


def _replay_applied(
    tables: Tables, wanted: set[uuid.UUID], progress: Progress | None, done: int, total: int, *, scan: bool
) -> int:
    """Folds the log's events whose ids are in `wanted`, in delivery order. `scan`: walk the whole log
    (many ids); otherwise fetch the few rows by id."""
    events = Q(topic__in=SUBSCRIBER.topics, type__in=SUBSCRIBER.types)
    if not scan:
        rows = sorted(
            (
                row
                for chunk in _chunks(sorted(wanted), BATCH)
                for row in OutboxMessage.objects.filter(events, event_id__in=chunk)
            ),
            key=lambda row: (row.txid, row.id),
        )
        return _fold_rows(tables, rows, progress, done, total)
    position = (0, 0)
    while True:
        page = list(
            OutboxMessage.objects.filter(
                events, Q(txid__gt=position[0]) | Q(txid=position[0], id__gt=position[1])
            ).order_by("txid", "id")[:BATCH]
        )
        if not page:
            return done
        position = (page[-1].txid, page[-1].id)
        done = _fold_rows(tables, [row for row in page if row.event_id in wanted], progress, done, total)


def _fold_rows(tables: Tables, rows: list[OutboxMessage], progress: Progress | None, done: int, total: int) -> int:
    if not rows:
        return done
    with transaction.atomic():
        for row in rows:
            fold = FOLDS[message_class(row.type)]
            fold(decode(row.type, row.payload), Delivery.of(row), tables)
    done += len(rows)
    if progress is not None:
        progress(done, max(total, done))
    return done


def _chunks(items: list[uuid.UUID], size: int) -> list[list[uuid.UUID]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _empty(tables: Tables) -> None:
    with transaction.atomic():
        for model in tables.all():
            model.objects.all().delete()


def projection_rebuild(
    *,
    name: str = ESCROWS,
    progress: Progress | None = None,
    lock_wait_seconds: float = 30.0,
    from_kafka: bool | None = None,
) -> RebuildSummary:
    """`from_kafka`: None decides from settings (`fed_from_kafka`)."""
    if name not in PROJECTION_SETS:
        raise LookupError(f"no projection set named {name!r}; known: {', '.join(PROJECTION_SETS)}")
    pointer, _ = ActiveGeneration.objects.get_or_create(name=name)
    live_color, target = pointer.color, other_color(pointer.color)
    tables = tables_for(target)
    started = timezone.now()
    _empty(tables)
    if fed_from_kafka() if from_kafka is None else from_kafka:
        return _rebuild_from_consumer(name, live_color, target, tables, started, progress)

    start = (0, 0)
    first_upto = _position(SUBSCRIBER.name)
    total = _count(start, first_upto)
    done = _replay(tables, start, first_upto, progress, 0, total)

    deadline = time.monotonic() + lock_wait_seconds
    while True:
        with subscriber_exclusive(SUBSCRIBER.name) as acquired:
            if acquired:
                final_upto = _position(SUBSCRIBER.name)
                total = done + _count(first_upto, final_upto)
                with transaction.atomic():
                    done = _replay(tables, first_upto, final_upto, progress, done, total)
                    locked = ActiveGeneration.objects.select_for_update().get(name=name)
                    if locked.color != live_color:
                        raise RuntimeError("another rebuild switched this projection set meanwhile")
                    switched = timezone.now()
                    locked.color, locked.generation, locked.switched_at = target, locked.generation + 1, switched
                    locked.save()
                    ProjectionRebuild.objects.create(
                        name=name,
                        from_color=live_color,
                        to_color=target,
                        generation=locked.generation,
                        events=done,
                        started_at=started,
                        switched_at=switched,
                    )
                break
        if time.monotonic() >= deadline:
            raise TimeoutError("the live projections subscriber kept its drain lock; try again")
        time.sleep(0.01)
    if progress is not None:
        progress(done, done)
    return RebuildSummary(
        name=name,
        from_color=live_color,
        to_color=target,
        generation=locked.generation,
        events=done,
        rows={model.__name__: model.objects.count() for model in tables.all()},
    )


def _rebuild_from_consumer(
    name: str, live_color: str, target: str, tables: Tables, started: Any, progress: Progress | None
) -> RebuildSummary:
    first = _applied_ids()
    done = _replay_applied(tables, first, progress, 0, len(first), scan=True)
    with transaction.atomic():
        # From here the live consumer waits at the pointer (its handler share-locks it) until the flip commits.
        locked = ActiveGeneration.objects.select_for_update().get(name=name)
        if locked.color != live_color:
            raise RuntimeError("another rebuild switched this projection set meanwhile")
        since = _applied_ids() - first
        done = _replay_applied(tables, since, progress, done, done + len(since), scan=False)
        switched = timezone.now()
        locked.color, locked.generation, locked.switched_at = target, locked.generation + 1, switched
        locked.save()
        ProjectionRebuild.objects.create(
            name=name,
            from_color=live_color,
            to_color=target,
            generation=locked.generation,
            events=done,
            started_at=started,
            switched_at=switched,
        )
    if progress is not None:
        progress(done, done)
    return RebuildSummary(
        name=name,
        from_color=live_color,
        to_color=target,
        generation=locked.generation,
        events=done,
        rows={model.__name__: model.objects.count() for model in tables.all()},
    )
