"""Writing to the outbox: the only way any app sends a message. Call it inside the transaction that
changes the state the message reports; the message exists if and only if that transaction commits."""

from __future__ import annotations

import contextvars
import datetime
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import betterproto2
from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.outbox import context, messages, wakeup
from apps.outbox.models import OutboxMessage

M = TypeVar("M", bound=models.Model)

# Rows this thread has appended, ever: the bus worker compares it before and after a drain to know whether
# its own handlers wrote rows it has not read yet (`appended_here`).
_appends = threading.local()


def appended_here() -> int:
    """How many outbox rows this thread has appended so far (committed or not)."""
    return getattr(_appends, "count", 0)


def outbox_append(
    *,
    message: betterproto2.Message,
    aggregate_id: str,
    aggregate_version: int,
    event_id: uuid.UUID | None = None,
    key: str | None = None,
    causation_id: str = "",
    occurred_at: datetime.datetime | None = None,
) -> OutboxMessage:
    if not connection.in_atomic_block:
        raise RuntimeError("outbox_append must run inside the transaction that changes the state")
    name = messages.type_name(message)
    trace = context.current()
    row = OutboxMessage(
        event_id=event_id or messages.deterministic_id(aggregate_id, aggregate_version, name),
        topic=messages.topic_for(message),
        key=key if key is not None else aggregate_id,
        type=name,
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        payload=bytes(message),
        occurred_at=occurred_at or timezone.now(),
        correlation_id=trace.correlation_id,
        causation_id=causation_id or trace.causation_id,
        traceparent=trace.traceparent,
    )
    _appends.count = appended_here() + 1
    pending = _batch.get()
    if pending is not None:
        # Written with the others when the batch ends (`batched_appends`), unless a savepoint it was
        # appended in is rolled back first: Django drops the marker's on-commit entry then.
        marker = _Marker()
        transaction.on_commit(marker)
        pending.append((row, marker))
        return row
    row.save(force_insert=True)
    _wake_subscribers_on_commit()
    return row


class _Marker:
    """A row's on-commit entry: it exists as long as no savepoint the row was appended in was rolled back."""

    def __call__(self) -> None:
        pass


# The rows appended inside `batched_appends`, not written yet, each with its marker; None outside one.
_batch: contextvars.ContextVar[list[tuple[OutboxMessage, _Marker]] | None] = contextvars.ContextVar(
    "outbox_batch", default=None
)


@contextmanager
def batched_appends() -> Iterator[None]:
    """Inside a transaction: the rows `outbox_append` is given here are written in one statement when the
    block ends without an error, in the order they were appended (their ids keep that order), with the
    transaction's NOTIFY in the same statement on PostgreSQL. A row appended here has no `id` until then.
    An error leaves nothing written (the transaction, or its savepoint, is rolled back by the caller's
    `atomic`), and a row appended in a savepoint rolled back inside the block (an inner `atomic` that
    failed and was caught) is left out, as its insert would have been rolled back with it. Nested, the
    outermost block writes."""
    if not connection.in_atomic_block:
        raise RuntimeError("batched_appends must run inside the transaction that changes the state")
    if _batch.get() is not None:
        yield
        return
    pending: list[tuple[OutboxMessage, _Marker]] = []
    token = _batch.set(pending)
    try:
        yield
    finally:
        _batch.reset(token)
    alive = {id(entry[1]) for entry in connection.run_on_commit}  # (savepoint ids, function, robust)
    rows = [row for row, marker in pending if id(marker) in alive]
    if rows:
        _write(rows)


def _write(rows: list[OutboxMessage]) -> None:
    if connection.vendor != "postgresql":
        OutboxMessage.objects.bulk_create(rows)
        _wake_subscribers_on_commit()
        return
    columns = [field for field in OutboxMessage._meta.concrete_fields if field.name not in ("id", "txid")]
    sql = (
        f"INSERT INTO {OutboxMessage._meta.db_table} ({', '.join(f.column for f in columns)}) VALUES "
        + ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
        # One NOTIFY for the transaction, sent by PostgreSQL when it commits (`_wake_subscribers_on_commit`):
        # an uncorrelated subquery runs once per statement, and a repeated one is folded into one anyway.
        + " RETURNING id, (SELECT pg_notify(%s, ''))"
    )
    params = [field.get_db_prep_save(field.pre_save(row, True), connection) for row in rows for field in columns]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, wakeup.NOTIFY_CHANNEL])
        for row, (row_id, _) in zip(rows, cursor.fetchall(), strict=True):
            row.id = row_id
    _wake_subscribers_on_commit(notified=True)


def _wake_subscribers_on_commit(*, notified: bool = False) -> None:
    """Once per transaction: NOTIFY other processes (delivered by PostgreSQL at commit; `notified` if the
    caller's statement did), and wake this process's bus after commit (what runs then is the bus's to
    register: apps.outbox.wakeup)."""
    # Each entry is (savepoint ids, function, robust).
    if any(entry[1] is wakeup.after_commit for entry in connection.run_on_commit):
        return
    if connection.vendor == "postgresql" and not notified:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [wakeup.NOTIFY_CHANNEL])
    # robust: the transaction has committed; a failing in-process drain must not turn the caller's
    # answer into an error (the worker catches up, and the failure is logged).
    transaction.on_commit(wakeup.after_commit, robust=True)


class StreamLockedTooLate(RuntimeError):
    """A handler applied in a batch asked for a stream the batch did not lock before its first write.
    The bus rolls the batch back and applies its messages one transaction each."""


# The streams a batch transaction locked up front (see `stream_locks`); None outside a batch.
_batch_streams: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("batch_streams", default=None)
# Whether the batch refuses every stream it did not lock up front (`stream_locks(strict=True)`).
_batch_strict: contextvars.ContextVar[bool] = contextvars.ContextVar("batch_strict", default=False)


def stream_lock(key: str) -> None:
    """Serialises the writers of one message stream (an escrow's messages, on every topic).

    Take it first in a transaction, before any other write: it is a transaction-level advisory lock and
    assigns no transaction id, so a transaction that waited gets its id after the holder committed,
    and (txid, id) delivery order is the stream's order. SQLite has one writer at a time already.

    Inside a batch (`stream_locks`), a stream the batch locked up front is already held; any other is
    refused once the transaction has written, since taking it then would break that argument (and always
    in a strict batch: one that applies several subscribers, each in a savepoint, where a lock taken
    inside a savepoint would be let go when that savepoint rolls back).
    """
    if connection.vendor != "postgresql":
        return
    held = _batch_streams.get()
    with connection.cursor() as cursor:
        if held is not None:
            if key in held:
                return
            if _batch_strict.get():
                raise StreamLockedTooLate(key)
            cursor.execute("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
            if cursor.fetchone()[0]:
                raise StreamLockedTooLate(key)
            held.add(key)
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"stream:{key}"])


def aggregate_lock(stream: str, rows: QuerySet[M]) -> M | None:
    """The first write of a transaction that appends an aggregate's messages: the stream lock, then the
    aggregate's row lock (`rows` selects that one row). Every app locks its aggregate this way, in this
    order (see `stream_lock`)."""
    stream_lock(stream)
    return rows.select_for_update().first()


@contextmanager
def stream_locks(keys: Iterable[str], *, strict: bool = False) -> Iterator[None]:
    """Locks several streams at the start of one transaction (the bus applying a batch of messages),
    in one fixed order, so that two batches cannot deadlock on each other; `stream_lock` on any of
    them inside is then a no-op. Must run before the transaction's first write. `strict`: inside,
    `stream_lock` on any other stream is refused (`StreamLockedTooLate`), written or not."""
    held = set(keys)
    if connection.vendor == "postgresql" and held:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended('stream:' || k, 0) AS h"
                " FROM unnest(%s::text[]) AS k ORDER BY 1) AS ordered",
                [sorted(held)],
            )
    token = _batch_streams.set(held)
    strict_token = _batch_strict.set(strict)
    try:
        yield
    finally:
        _batch_strict.reset(strict_token)
        _batch_streams.reset(token)
