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
from contextlib import contextmanager, nullcontext
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from apps.outbox import messages, outage, publish, wakeup
from apps.outbox.apply import run_handler
from apps.outbox.models import OutboxMessage, ProcessedMessage
from apps.outbox.reader import (
    pending_rows_on,
    save_checkpoint,
    save_checkpoints,
    subscriber_checkpoints,
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


def _drain_key(name: str) -> int:
    return zlib.crc32(f"bus:{name}".encode())


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
            key = _drain_key(name)
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

    The subscribers whose drain lock this caller gets are drained together (`_drain_locked`): one outbox
    read for all of them, and a run of each one's messages applied in one transaction shared by all, a
    savepoint each (`_apply_runs`). A subscriber another thread is already draining is left to that
    thread, which is asked for one more pass.
    """
    handled = 0
    remaining = list(subs)
    while remaining:
        for sub in remaining:
            _pending[sub.name] = False
        with subscribers_exclusive([sub.name for sub in remaining]) as names:
            locked = [sub for sub in remaining if sub.name in names]
            for sub in remaining:
                if sub.name not in names:
                    _pending[sub.name] = True
            if locked:
                handled += _drain_locked(locked)
        remaining = [sub for sub in locked if _pending.get(sub.name)]
    return handled


@contextmanager
def subscribers_exclusive(names: list[str]) -> Iterator[list[str]]:
    """The drain locks of several subscribers (`subscriber_exclusive`), taken and let go in one statement
    each on PostgreSQL: yields the names this caller got."""
    if len(names) == 1:
        with subscriber_exclusive(names[0]) as acquired:
            yield list(names) if acquired else []
        return
    held = [name for name in names if _lock_for(name).acquire(blocking=False)]
    try:
        got = held
        if connection.vendor == "postgresql" and held:
            keys = {_drain_key(name): name for name in held}
            with connection.cursor() as cursor:
                cursor.execute("SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_lock(k)", [sorted(keys)])
                taken = {keys[key] for (key,) in cursor.fetchall()}
            got = [name for name in held if name in taken]
        try:
            yield got
        finally:
            if connection.vendor == "postgresql" and got:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k",
                        [sorted(_drain_key(name) for name in got)],
                    )
    finally:
        for name in held:
            _lock_for(name).release()


def _drain_locked(subs: list[Subscriber]) -> int:
    """Reads the outbox once for all these subscribers (the rows after the earliest checkpoint, on any of
    their topics) and applies each one's rows after its own checkpoint, round after round, until the read
    reached what was committed (and waited a little for rows held back by an older open transaction).

    In the bus worker a read that reached the end is not repeated, unless a handler appended to the outbox
    in that round: its rows are read in the same drain, under the same locks."""
    position = {name: (c.last_txid, c.last_id) for name, c in subscriber_checkpoints([s.name for s in subs]).items()}
    topics = frozenset().union(*(sub.topics for sub in subs))
    handled = 0
    waited = 0.0
    while True:
        start = min(position.values())
        fetched, held_back = pending_rows_on(topics, *start, settings.BUS_BATCH_SIZE)
        if not fetched:
            if held_back is not None and waited < HOLD_BACK_WAIT_SECONDS:
                waited += wait_for_watermark(held_back, HOLD_BACK_WAIT_SECONDS - waited)
                continue
            if held_back is not None:
                _local.left_held_back = True  # `drain` asks again
            return handled
        waited = 0.0
        plan: list[tuple[Subscriber, list[Segment]]] = []
        for sub in subs:
            after = position[sub.name]
            rows = [row for row in fetched if row.topic in sub.topics and (row.txid, row.id) > after]
            if rows:
                plan.append((sub, list(_runs(sub, rows))))
        appends_before = publish.appended_here()
        handled += _deliver_segments(plan)
        end = (fetched[-1].txid, fetched[-1].id)
        position = {name: max(at, end) for name, at in position.items()}
        appended = publish.appended_here() != appends_before  # by this round's handlers, on this thread
        if (
            len(fetched) < settings.BUS_BATCH_SIZE
            and held_back is None
            and not appended
            and getattr(_local, "worker_draining", False)
        ):
            # The read reached the end of what was committed, and this is the bus worker: a row committed
            # since then wakes it again (NOTIFY or in-process wake), even if that committer's own drain
            # found these subscribers locked by us. Another drainer (inline dispatch) reads again before it
            # lets go of the locks, since the committer it locked out may not be listening.
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
    if not any(subscriber.handler_for(row.type) and (subscriber.name, row.event_id) not in done for row in rows):
        return records, None, None  # nothing to run: no savepoint, only the checkpoint moves
    try:
        with transaction.atomic() if savepoint else nullcontext(), publish.batched_appends():
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
    """Drains the given (default: this process's outbox) subscribers until none has anything left.

    Each pass first asks which of them have rows after their checkpoint (one statement). If any has, all
    of them are drained together, so that what one applies and appends (escrow's events, say) reaches
    the others in the same drain, under the same locks."""
    selected = [get_subscriber(n) for n in names] if names else outbox_subscribers()
    total = 0
    while True:
        _local.left_held_back = False
        handled = drain_subscribers(selected if subscribers_with_work(selected) else [])
        total += handled
        if not handled:
            return total
        if getattr(_local, "worker_draining", False) and not _local.left_held_back:
            # The bus worker does not ask again: its drain read up to what was committed, its own handlers'
            # rows included (`_drain_locked`), and what anyone else commits since announces itself. Rows
            # it left behind an older transaction still open are its own to come back for (that
            # transaction may write no outbox row, and so announce nothing when it ends).
            return total


def left_rows_held_back() -> bool:
    """Whether this thread's last drain gave up waiting for rows held back behind an older transaction
    still open (the bus worker comes back for them soon, not after its poll interval)."""
    return bool(getattr(_local, "left_held_back", False))


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
