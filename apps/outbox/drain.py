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
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from apps.outbox import messages, outage, publish, wakeup
from apps.outbox.apply import run_handler
from apps.outbox.models import OutboxMessage, ProcessedMessage
from apps.outbox.reader import (
    pending_rows,
    save_checkpoint,
    save_checkpoints,
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
    """Delivers every message this subscriber could take when it read the outbox (`drain_subscribers`)."""
    return drain_subscribers([subscriber])


def drain_subscribers(subs: list[Subscriber]) -> int:
    """Delivers every message these subscribers could take when they read the outbox. Returns how many
    they handled (`drain` repeats until a pass handles nothing).

    The subscribers whose drain lock this caller gets are drained together: a run of each one's messages
    is applied in one transaction shared by all of them, a savepoint each (`_apply_runs`). A subscriber
    another thread is already draining is left to that thread, which is asked for one more pass.
    """
    handled = 0
    remaining = list(subs)
    while remaining:
        for sub in remaining:
            _pending[sub.name] = False
        locked: list[Subscriber] = []
        with ExitStack() as stack:
            for sub in remaining:
                if stack.enter_context(subscriber_exclusive(sub.name)):
                    locked.append(sub)
                else:
                    _pending[sub.name] = True
            if locked:
                handled += _drain_locked(locked)
        remaining = [sub for sub in locked if _pending.get(sub.name)]
    return handled


def _drain_locked(subs: list[Subscriber]) -> int:
    """Reads each subscriber's rows after its checkpoint and applies them, round after round, until every
    one of them read what was committed (and waited a little for rows held back by an older open
    transaction)."""
    position: dict[str, tuple[int, int]] = {}
    for sub in subs:
        checkpoint = subscriber_checkpoint(sub.name)
        position[sub.name] = (checkpoint.last_txid, checkpoint.last_id)
    active = list(subs)
    handled = 0
    waited = 0.0
    while active:
        fetched = {sub.name: pending_rows(sub, *position[sub.name], settings.BUS_BATCH_SIZE) for sub in active}
        if not any(rows for rows, _ in fetched.values()):
            held = [txid for _, txid in fetched.values() if txid is not None]
            if held and waited < HOLD_BACK_WAIT_SECONDS:
                waited += wait_for_watermark(min(held), HOLD_BACK_WAIT_SECONDS - waited)
                continue
            return handled
        waited = 0.0
        handled += _deliver_segments([(sub, list(_runs(sub, fetched[sub.name][0]))) for sub in active])
        still: list[Subscriber] = []
        for sub in active:
            rows, held_back = fetched[sub.name]
            if not rows:
                if held_back is not None:
                    still.append(sub)  # read again with the others; waited for once none has rows
                continue
            if len(rows) < settings.BUS_BATCH_SIZE and held_back is None and getattr(_local, "worker_draining", False):
                # The read reached the end of what was committed, and this is the bus worker: a row committed
                # since then wakes it again (NOTIFY or in-process wake), even if that committer's own drain
                # found this subscriber locked by us. Another drainer (inline dispatch) reads again before it
                # lets go of the lock, since the committer it locked out may not be listening.
                continue
            position[sub.name] = (rows[-1].txid, rows[-1].id)
            still.append(sub)
        active = still
    return handled


Segment = tuple[list[OutboxMessage], OutboxMessage | None]
Run = tuple[Subscriber, list[OutboxMessage]]


def _runs(subscriber: Subscriber, rows: list[OutboxMessage]) -> Iterator[Segment]:
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


def _deliver_segments(plan: list[tuple[Subscriber, list[Segment]]]) -> int:
    """Delivers each subscriber's segments in its order. Step by step, every subscriber whose next segment
    is a run joins one shared transaction (`_deliver_runs`); one whose next segment is a provider call
    makes it on its own (`retry.deliver`). Subscribers do not wait for one another's order, only for
    their own."""
    queues = [(sub, deque(segments)) for sub, segments in plan if segments]
    handled = 0
    while queues:
        runs: list[Run] = []
        for sub, queue in queues:
            run, external = queue.popleft()
            if external is not None:
                handled += deliver(sub, external)
            else:
                runs.append((sub, run))
        queues = [(sub, queue) for sub, queue in queues if queue]
        if runs:
            handled += _deliver_runs(runs)
    return handled


def _deliver_runs(runs: list[Run]) -> int:
    """Applies the runs of one or more subscribers in one transaction (`_apply_runs`). A subscriber whose
    handler failed was rolled back alone (its savepoint) and continues on its own (`_recover`); if the
    shared transaction failed outside every savepoint, each subscriber's run is delivered on its own."""
    if len(runs) == 1:
        ((subscriber, rows),) = runs
        return _deliver_run(subscriber, rows)
    outcome = _apply_runs(runs)
    if outcome is None:
        return sum(_deliver_run(sub, rows) for sub, rows in runs)
    handled = 0
    for sub, rows in runs:
        applied, failed_at, error = outcome[sub.name]
        handled += applied if error is None else _recover(sub, rows, failed_at, error)
    return handled


def _deliver_run(subscriber: Subscriber, rows: list[OutboxMessage]) -> int:
    """Applies one subscriber's run in as few transactions as it can, each with one checkpoint write."""
    if all(subscriber.handler_for(row.type) is None for row in rows):
        save_checkpoint(subscriber.name, rows[-1])
        return 0
    if len(rows) == 1:
        return deliver(subscriber, rows[0])
    outcome = _apply_runs([(subscriber, rows)])
    if outcome is None:  # failed after its handlers ran (dedupe insert, checkpoint): one by one
        return sum(deliver(subscriber, row) for row in rows)
    applied, failed_at, error = outcome[subscriber.name]
    return applied if error is None else _recover(subscriber, rows, failed_at, error)


def _recover(subscriber: Subscriber, rows: list[OutboxMessage], failed_at: int | None, error: Exception) -> int:
    """After a run of this subscriber was rolled back because the handler of `rows[failed_at]` failed: the
    rows before it are applied again (they had succeeded), the failing row goes to `retry.deliver` with that
    failure counted as its first attempt, and the rows after it form the next run. A handler runs exactly
    as often as it would one by one."""
    if failed_at is None:
        return sum(deliver(subscriber, row) for row in rows)
    handled = _deliver_run(subscriber, rows[:failed_at]) if failed_at else 0
    # A stream the run had not locked is no handler failure: that row simply needs its own transaction.
    first_failure = None if isinstance(error, publish.StreamLockedTooLate) else error
    handled += deliver(subscriber, rows[failed_at], first_failure)
    if rows[failed_at + 1 :]:
        handled += _deliver_run(subscriber, rows[failed_at + 1 :])
    return handled


Outcome = tuple[int, int | None, Exception | None]


def _apply_runs(runs: list[Run]) -> dict[str, Outcome] | None:
    """One transaction for the runs of one or more subscribers: every stream that a subscriber appending
    to the outbox may write locked first, in one fixed order (so no two transactions wait on each other's
    streams); one dedupe read; each subscriber's handlers in order, in a savepoint of its own when there
    are several; one insert of the dedupe records and the checkpoint writes of the subscribers that
    succeeded; the commit.

    Returns, per subscriber: (rows applied, None, None), or (0, index of the row whose handler failed, the
    error) for one rolled back. With a single subscriber there is no savepoint: its failure rolls back the
    transaction. None if the transaction failed outside every handler (and was rolled back whole).
    """
    shared = len(runs) > 1
    outcome: dict[str, Outcome] = {}
    try:
        with transaction.atomic():
            streams = {
                row.aggregate_id
                for sub, rows in runs
                if sub.appends_to_outbox
                for row in rows
                if sub.handler_for(row.type) is not None
            }
            with publish.stream_locks(streams, strict=shared):
                done = _processed(runs)
                records: list[ProcessedMessage] = []
                positions: dict[str, OutboxMessage] = {}
                for sub, rows in runs:
                    applied, failed_at, error = _apply_one(sub, rows, done, savepoint=shared)
                    if error is not None:
                        outcome[sub.name] = (0, failed_at, error)
                        if not shared or connection.needs_rollback:
                            raise error  # nothing of this transaction can commit
                        continue
                    records += applied
                    positions[sub.name] = rows[-1]
                    outcome[sub.name] = (len(applied), None, None)
                ProcessedMessage.objects.bulk_create(records)
                save_checkpoints(positions)
        return outcome
    except outage.DatabaseUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the caller retries the rows where failures are handled
        if not shared and outcome:
            return outcome  # its handler failed: the caller knows which row
        if shared and outage.connection_lost(exc):
            raise outage.DatabaseUnavailable("database connection lost") from exc
        log.info(
            "bus batch rolled back",
            extra={
                "subscribers": [sub.name for sub, _ in runs],
                "messages": sum(len(rows) for _, rows in runs),
                "error": repr(exc),
            },
        )
        return None


def _processed(runs: list[Run]) -> set[tuple[str, Any]]:
    """(subscriber, event id) of the rows the subscribers already applied, in one read."""
    wanted = {(sub.name, row.event_id) for sub, rows in runs for row in rows if sub.handler_for(row.type)}
    if not wanted:
        return set()
    found = ProcessedMessage.objects.filter(
        subscriber__in={name for name, _ in wanted}, event_id__in={event_id for _, event_id in wanted}
    ).values_list("subscriber", "event_id")
    return set(found) & wanted


def _apply_one(
    subscriber: Subscriber, rows: list[OutboxMessage], done: set[tuple[str, Any]], *, savepoint: bool
) -> tuple[list[ProcessedMessage], int | None, Exception | None]:
    """Runs one subscriber's handlers over its run, in order (in a savepoint of its own if asked): the
    dedupe records to write, or the index of the row whose handler failed and the error (the savepoint
    rolled back)."""
    current: int | None = None
    records: list[ProcessedMessage] = []
    try:
        with transaction.atomic() if savepoint else nullcontext():
            for index, row in enumerate(rows):
                current = index
                handler = subscriber.handler_for(row.type)
                if handler is None or (subscriber.name, row.event_id) in done:
                    continue
                message = messages.decode(row.type, row.payload)
                run_handler(subscriber, handler, message, Delivery.of(row), None)
                records.append(ProcessedMessage(subscriber=subscriber.name, event_id=row.event_id))
    except Exception as exc:  # noqa: BLE001 - reported to the caller, which rolls back and retries
        if outage.is_database_error(exc) and outage.connection_broken():
            # Not the handler's fault: the whole transaction is gone, every checkpoint unmoved.
            raise outage.DatabaseUnavailable("database connection lost") from exc
        log.info(
            "bus batch rolled back",
            extra={"subscriber": subscriber.name, "messages": len(rows), "failed_at": current, "error": repr(exc)},
        )
        return [], current, exc
    return records, None, None


def drain(names: list[str] | None = None) -> int:
    """Drains the given (default: this process's outbox) subscribers until none has anything left."""
    selected = [get_subscriber(n) for n in names] if names else outbox_subscribers()
    total = 0
    while True:
        handled = drain_subscribers(subscribers_with_work(selected))
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
