"""The in-process bus: drains outbox messages to subscribers in commit order.

Guarantees (see docs/messaging.md):
- at least once, in per-escrow order, after any crash: a subscriber's checkpoint and dedupe record are
  committed in the same transaction as its handler's effect (exactly-once effect for database work,
  `apply`);
- no message is skipped when transactions commit out of order (`reader`, the xid watermark);
- woken on commit (in-process event, PostgreSQL NOTIFY for other processes: `wake` here), with a polling
  worker that catches up after a crash;
- a handler that keeps failing is retried with backoff, then dead-lettered, and the subscriber moves on
  (`retry`).

A drain reads a batch, splits it into runs that share one transaction and one checkpoint write, and
hands a row whose run failed to `retry.deliver`.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction

from apps.outbox import messages, publish, wakeup
from apps.outbox.apply import run_handler
from apps.outbox.models import OutboxMessage, ProcessedMessage
from apps.outbox.reader import (
    pending_rows,
    save_checkpoint,
    subscriber_checkpoint,
    subscribers_with_work,
    wait_for_watermark,
)
from apps.outbox.registry import Delivery, ExternalEffect, Subscriber, get_subscriber, outbox_subscribers
from apps.outbox.retry import deliver

log = logging.getLogger(__name__)

# How long a drain waits for older in-flight transactions before leaving newer rows to the next wake.
HOLD_BACK_WAIT_SECONDS = 1.0

# One drainer per subscriber (`subscriber_exclusive`); a drain asked for while another runs is `_pending`.
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_pending: dict[str, bool] = {}
_local = threading.local()


def _lock_for(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


@contextmanager
def subscriber_exclusive(name: str) -> Iterator[bool]:
    """The subscriber's drain lock, which every drain of it takes: yields whether this caller got it.
    Held by at most one thread in this process and, on PostgreSQL, one process (advisory lock; it
    assigns no transaction id, so it cannot disturb the watermark)."""
    lock = _lock_for(name)
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        if connection.vendor == "postgresql":
            key = zlib.crc32(f"bus:{name}".encode())
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
                acquired = cursor.fetchone()[0]
            if not acquired:
                yield False
                return
            try:
                yield True
            finally:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        else:
            yield True
    finally:
        lock.release()


def drain_subscriber(subscriber: Subscriber) -> int:
    """Delivers every message this subscriber could take when it read the outbox. Returns how many it
    handled (`drain` repeats until a pass handles nothing).

    If another thread is already draining it, asks that thread for one more pass and returns 0.
    """
    handled = 0
    while True:
        _pending[subscriber.name] = False
        with subscriber_exclusive(subscriber.name) as acquired:
            if not acquired:
                _pending[subscriber.name] = True
                return handled
            handled += _drain_locked(subscriber)
        if not _pending.get(subscriber.name):
            return handled


def _drain_locked(subscriber: Subscriber) -> int:
    checkpoint = subscriber_checkpoint(subscriber.name)
    txid, row_id = checkpoint.last_txid, checkpoint.last_id
    handled = 0
    waited = 0.0
    while True:
        rows, held_back = pending_rows(subscriber, txid, row_id, settings.BUS_BATCH_SIZE)
        if not rows:
            if waited < HOLD_BACK_WAIT_SECONDS and held_back is not None:
                waited += wait_for_watermark(held_back, HOLD_BACK_WAIT_SECONDS - waited)
                continue
            return handled
        waited = 0.0
        for run, external in _runs(subscriber, rows):
            if external is None:
                handled += _deliver_run(subscriber, run)
            elif deliver(subscriber, external):
                handled += 1
        if len(rows) < settings.BUS_BATCH_SIZE and held_back is None and getattr(_local, "worker_draining", False):
            # The read reached the end of what was committed, and this is the bus worker: a row committed
            # since then wakes it again (NOTIFY or in-process wake), even if that committer's own drain
            # found this subscriber locked by us. Another drainer (inline dispatch) reads again before it
            # lets go of the lock, since the committer it locked out may not be listening.
            return handled
        txid, row_id = rows[-1].txid, rows[-1].id


def _runs(
    subscriber: Subscriber, rows: list[OutboxMessage]
) -> Iterator[tuple[list[OutboxMessage], OutboxMessage | None]]:
    """Splits fetched rows, in order, into runs that can share a transaction (at most
    BUS_APPLY_BATCH_SIZE rows whose handlers are plain, or that this subscriber ignores) and single rows
    whose handler calls a provider (`ExternalEffect`: its call must happen outside any transaction)."""
    run: list[OutboxMessage] = []
    for row in rows:
        if isinstance(subscriber.handler_for(row.type), ExternalEffect):
            if run:
                yield run, None
                run = []
            yield [], row
            continue
        run.append(row)
        if len(run) >= settings.BUS_APPLY_BATCH_SIZE:
            yield run, None
            run = []
    if run:
        yield run, None


def _deliver_run(subscriber: Subscriber, rows: list[OutboxMessage]) -> int:
    """Applies a run of rows in as few transactions as it can, each with one checkpoint write.

    A batch that fails is rolled back whole. The rows before the one that failed are applied again (they
    had succeeded), the failing row goes to `retry.deliver` with that failure counted as its first attempt,
    and the rows after it form the next batch: a handler runs exactly as often as it would one by one.
    """
    if all(subscriber.handler_for(row.type) is None for row in rows):
        save_checkpoint(subscriber.name, rows[-1])
        return 0
    handled = 0
    while len(rows) > 1:
        applied, failed_at, error = _apply_batch(subscriber, rows)
        if error is None:
            return handled + applied
        if failed_at is None:  # failed after its handlers ran (dedupe insert, checkpoint): one by one
            return handled + sum(deliver(subscriber, row) for row in rows)
        if failed_at:
            handled += _deliver_run(subscriber, rows[:failed_at])
        # A stream the batch had not locked is no handler failure: that row simply needs its own transaction.
        first_failure = None if isinstance(error, publish.StreamLockedTooLate) else error
        handled += deliver(subscriber, rows[failed_at], first_failure)
        rows = rows[failed_at + 1 :]
    if rows:
        handled += deliver(subscriber, rows[0])
    return handled


def _apply_batch(subscriber: Subscriber, rows: list[OutboxMessage]) -> tuple[int, int | None, Exception | None]:
    """One transaction: the batch's streams locked first (for a subscriber that appends to the outbox),
    one dedupe read, each handler in order, one insert of the dedupe records, one checkpoint write.

    Returns (rows applied, None, None), or after rolling back: (0, index of the row whose handler
    failed or None if the failure came after the handlers, the error).
    """
    current: int | None = None
    try:
        with transaction.atomic():
            streams = {row.aggregate_id for row in rows} if subscriber.appends_to_outbox else ()
            with publish.stream_locks(streams):
                done = set(
                    ProcessedMessage.objects.filter(
                        subscriber=subscriber.name, event_id__in=[row.event_id for row in rows]
                    ).values_list("event_id", flat=True)
                )
                records = []
                for index, row in enumerate(rows):
                    current = index
                    handler = subscriber.handler_for(row.type)
                    if handler is None or row.event_id in done:
                        continue
                    message = messages.decode(row.type, row.payload)
                    run_handler(subscriber, handler, message, Delivery.of(row), None)
                    done.add(row.event_id)
                    records.append(ProcessedMessage(subscriber=subscriber.name, event_id=row.event_id))
                current = None
                ProcessedMessage.objects.bulk_create(records)
                save_checkpoint(subscriber.name, rows[-1])
        return len(records), None, None
    except Exception as exc:  # noqa: BLE001 - the caller retries the rows where failures are handled
        log.info(
            "bus batch rolled back",
            extra={"subscriber": subscriber.name, "messages": len(rows), "failed_at": current, "error": repr(exc)},
        )
        return 0, current, exc


def drain(names: list[str] | None = None) -> int:
    """Drains the given (default: this process's outbox) subscribers until none has anything left."""
    selected = [get_subscriber(n) for n in names] if names else outbox_subscribers()
    total = 0
    while True:
        handled = sum(drain_subscriber(sub) for sub in subscribers_with_work(selected))
        total += handled
        if not handled:
            return total


@contextmanager
def worker_draining() -> Iterator[None]:
    """Marks the bus worker's own drain on this thread: its handlers' commits need not wake it again."""
    _local.worker_draining = True
    try:
        yield
    finally:
        _local.worker_draining = False


def wake() -> None:
    """Called after a transaction that wrote outbox rows commits."""
    if getattr(_local, "worker_draining", False):
        return  # the worker's drain loops until a pass finds nothing: it reads these rows itself
    wakeup.announce()
    if settings.BUS_INLINE_DISPATCH:
        if getattr(_local, "draining", False):
            # Already inside a drain on this thread: the outer loop picks the new rows up.
            for sub in outbox_subscribers():
                _pending[sub.name] = True
            return
        _local.draining = True
        try:
            drain()
        finally:
            _local.draining = False


wakeup.on_commit(wake)
