"""The in-process bus: delivers outbox messages to subscribers in commit order.

Guarantees (see docs/messaging.md):
- at least once, in per-escrow order, after any crash: a subscriber's checkpoint and dedupe record are
  committed in the same transaction as its handler's effect (exactly-once effect for database work);
- no message is skipped when transactions commit out of order: on PostgreSQL a reader only takes rows
  written by transactions older than every transaction still running (the xid watermark), in
  (txid, id) order; SQLite has one writer at a time, so insertion order is commit order;
- woken on commit (in-process event, PostgreSQL NOTIFY for other processes), with a polling worker that
  catches up after a crash;
- a handler that keeps failing is retried with backoff, then dead-lettered, and the subscriber moves on.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import betterproto2
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.outbox import context, messages, outage, publish, wakeup
from apps.outbox.models import DeadLetter, OutboxMessage, ProcessedMessage, SubscriberCheckpoint

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = wakeup.NOTIFY_CHANNEL
# How long a drain waits for older in-flight transactions before leaving newer rows to the next wake.
HOLD_BACK_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Delivery:
    """The envelope of a message as a handler sees it."""

    event_id: uuid.UUID
    type: str
    topic: str
    key: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: Any
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""

    @classmethod
    def of(cls, row: OutboxMessage) -> Delivery:
        return cls(
            event_id=row.event_id,
            type=row.type,
            topic=row.topic,
            key=row.key,
            aggregate_id=row.aggregate_id,
            aggregate_version=row.aggregate_version,
            occurred_at=row.occurred_at,
            correlation_id=row.correlation_id,
            causation_id=row.causation_id,
            traceparent=row.traceparent,
        )


@dataclass(frozen=True)
class ExternalEffect:
    """A handler whose effect leaves the process (a provider API call).

    `prepare` runs outside any transaction and must be idempotent (it passes a key derived from the
    event id to the provider); `apply` records its result inside the subscriber's transaction.
    """

    prepare: Callable[[Any, Delivery], Any]
    apply: Callable[[Any, Delivery, Any], None]


Handler = Callable[[Any, Delivery], None] | ExternalEffect


@dataclass(frozen=True)
class Subscriber:
    """One app's reaction to messages: message class -> handler. Reading an app's `handlers` module
    tells every message it reacts to."""

    name: str
    handlers: Mapping[type[betterproto2.Message], Handler]
    # Its handlers append to the outbox (under `stream_lock` of the message's escrow): a batch of its
    # messages then locks those streams up front, before the transaction's first write.
    appends_to_outbox: bool = False
    topics: frozenset[str] = field(init=False)
    types: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", frozenset(messages.topic_for(cls()) for cls in self.handlers))
        object.__setattr__(self, "types", frozenset(messages.type_name(cls) for cls in self.handlers))

    def handler_for(self, type_name: str) -> Handler | None:
        if type_name not in self.types:
            return None
        return self.handlers[messages.message_class(type_name)]


_registry: dict[str, Subscriber] = {}


def register(subscriber: Subscriber) -> None:
    _registry[subscriber.name] = subscriber


def unregister(name: str) -> None:
    """Removes a subscriber (tests and tools that register their own); its checkpoint stays."""
    _registry.pop(name, None)


def subscribers() -> list[Subscriber]:
    return list(_registry.values())


def outbox_subscribers() -> list[Subscriber]:
    """The subscribers this process feeds from the outbox (an app consumed from Kafka is not)."""
    enabled = set(settings.BUS_OUTBOX_SUBSCRIBERS)
    return [sub for name, sub in _registry.items() if name in enabled]


def get_subscriber(name: str) -> Subscriber:
    try:
        return _registry[name]
    except KeyError:
        raise LookupError(f"no subscriber named {name!r}; known: {sorted(_registry)}") from None


# --- applying one message -------------------------------------------------------------------------


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
    _run_handler(subscriber, handler, message, delivery, prepared)
    ProcessedMessage.objects.create(subscriber=subscriber.name, event_id=delivery.event_id)
    return True


def _run_handler(
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


# --- reading the outbox in commit order -----------------------------------------------------------


def _checkpoint(name: str) -> SubscriberCheckpoint:
    checkpoint, _ = SubscriberCheckpoint.objects.get_or_create(subscriber=name)
    return checkpoint


def _after(txid: int, row_id: int) -> Q:
    return Q(txid__gt=txid) | Q(txid=txid, id__gt=row_id)


# The xid watermark: rows written by transactions below it are settled (committed or rolled back) in
# the reading statement's snapshot, so reading only below it, in (txid, id) order, never skips a row.
# It is the oldest transaction still running (pg_snapshot_xmin), except that transactions positively
# known to run in ANOTHER database are ignored: they cannot write this outbox, and on a shared server
# they would otherwise hold delivery back. A transaction whose database is unknown (finished since
# the snapshot, or hidden from pg_stat_activity) still counts, so the filter can only err on the safe
# side. xids in pg_stat_activity are 32-bit; within one snapshot the low 32 bits are unambiguous.
# The query lives in the SQL function `outbox_xid_watermark()` (migration outbox 0003): planning it
# cost more than running it. The function is STABLE, so it sees the calling statement's snapshot; the
# sub-select makes it run once per statement, not once per row.
XID_WATERMARK_SQL = "(SELECT outbox_xid_watermark())"


def pending_rows(subscriber: Subscriber, txid: int, row_id: int, limit: int) -> tuple[list[OutboxMessage], int | None]:
    """The rows this subscriber can take now, in delivery order, and the txid of the first committed row
    it cannot take yet because an older transaction is still open (None if there is none).

    One statement: the rows after the checkpoint come with the watermark, and since they are in txid
    order the settled ones (txid below it) are a prefix; the first row after that prefix is held back.
    """
    rows = OutboxMessage.objects.filter(_after(txid, row_id), topic__in=subscriber.topics).order_by("txid", "id")
    if connection.vendor != "postgresql":
        return list(rows[:limit]), None
    fetched = list(rows.annotate(watermark=RawSQL(XID_WATERMARK_SQL, []))[:limit])
    settled = [row for row in fetched if row.txid < row.watermark]
    held_back = fetched[len(settled)].txid if len(settled) < len(fetched) else None
    return settled, held_back


def subscribers_with_work(selected: list[Subscriber]) -> list[Subscriber]:
    """The subscribers that have outbox rows after their checkpoint (settled or held back), in one
    statement: a drain pass skips the others instead of spending a lock, a checkpoint read and an outbox
    read on each. Rows committed after this read announce themselves (wake, NOTIFY)."""
    if connection.vendor != "postgresql" or not selected:
        return selected
    values = ", ".join(["(%s, %s::text[])"] * len(selected))
    params = [value for sub in selected for value in (sub.name, sorted(sub.topics))]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT v.name FROM (VALUES {values}) AS v(name, topics)
                LEFT JOIN {SubscriberCheckpoint._meta.db_table} c ON c.subscriber = v.name
                WHERE EXISTS (
                    SELECT 1 FROM {OutboxMessage._meta.db_table} o
                    WHERE (o.txid, o.id) > (COALESCE(c.last_txid, 0), COALESCE(c.last_id, 0))
                      AND o.topic = ANY(v.topics))""",
            params,
        )
        names = {name for (name,) in cursor.fetchall()}
    return [sub for sub in selected if sub.name in names]


def _wait_for_watermark(txid: int, budget: float) -> float:
    """Polls the xid watermark (no outbox scan) until it passes `txid` or `budget` seconds pass; returns
    the time spent. Transactions that wrote no outbox rows announce nothing when they end, hence polling."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"SELECT {XID_WATERMARK_SQL}")
            if cursor.fetchone()[0] > txid:
                break
            if time.monotonic() - started >= budget:
                break
            time.sleep(0.002)
    return max(time.monotonic() - started, 0.002)


def lag(subscriber: Subscriber) -> int:
    checkpoint = _checkpoint(subscriber.name)
    return OutboxMessage.objects.filter(
        _after(checkpoint.last_txid, checkpoint.last_id), topic__in=subscriber.topics
    ).count()


# --- one drainer per subscriber -------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_pending: dict[str, bool] = {}
_local = threading.local()


def _lock_for(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


@contextmanager
def _exclusive(name: str) -> Iterator[bool]:
    """Held by at most one thread in this process and, on PostgreSQL, one process (advisory lock; it
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
        with _exclusive(subscriber.name) as acquired:
            if not acquired:
                _pending[subscriber.name] = True
                return handled
            handled += _drain_locked(subscriber)
        if not _pending.get(subscriber.name):
            return handled


def _drain_locked(subscriber: Subscriber) -> int:
    checkpoint = _checkpoint(subscriber.name)
    txid, row_id = checkpoint.last_txid, checkpoint.last_id
    handled = 0
    waited = 0.0
    while True:
        rows, held_back = pending_rows(subscriber, txid, row_id, settings.BUS_BATCH_SIZE)
        if not rows:
            if waited < HOLD_BACK_WAIT_SECONDS and held_back is not None:
                waited += _wait_for_watermark(held_back, HOLD_BACK_WAIT_SECONDS - waited)
                continue
            return handled
        waited = 0.0
        for run, external in _runs(subscriber, rows):
            if external is None:
                handled += _deliver_run(subscriber, run)
            elif _deliver(subscriber, external):
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
    had succeeded), the failing row goes to `_deliver` with that failure counted as its first attempt,
    and the rows after it form the next batch: a handler runs exactly as often as it would one by one.
    """
    if all(subscriber.handler_for(row.type) is None for row in rows):
        _save_checkpoint(subscriber.name, rows[-1])
        return 0
    handled = 0
    while len(rows) > 1:
        applied, failed_at, error = _apply_batch(subscriber, rows)
        if error is None:
            return handled + applied
        if failed_at is None:  # failed after its handlers ran (dedupe insert, checkpoint): one by one
            return handled + sum(_deliver(subscriber, row) for row in rows)
        if failed_at:
            handled += _deliver_run(subscriber, rows[:failed_at])
        # A stream the batch had not locked is no handler failure: that row simply needs its own transaction.
        first_failure = None if isinstance(error, publish.StreamLockedTooLate) else error
        handled += _deliver(subscriber, rows[failed_at], first_failure)
        rows = rows[failed_at + 1 :]
    if rows:
        handled += _deliver(subscriber, rows[0])
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
                    _run_handler(subscriber, handler, message, Delivery.of(row), None)
                    done.add(row.event_id)
                    records.append(ProcessedMessage(subscriber=subscriber.name, event_id=row.event_id))
                current = None
                ProcessedMessage.objects.bulk_create(records)
                _save_checkpoint(subscriber.name, rows[-1])
        return len(records), None, None
    except Exception as exc:  # noqa: BLE001 - the caller retries the rows where failures are handled
        log.info(
            "bus batch rolled back",
            extra={"subscriber": subscriber.name, "messages": len(rows), "failed_at": current, "error": repr(exc)},
        )
        return 0, current, exc


def _save_checkpoint(name: str, row: OutboxMessage) -> None:
    SubscriberCheckpoint.objects.filter(subscriber=name).update(
        last_txid=row.txid, last_id=row.id, updated_at=timezone.now()
    )


def _deliver(subscriber: Subscriber, row: OutboxMessage, first_failure: Exception | None = None) -> bool:
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
                    _save_checkpoint(subscriber.name, row)
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
        _save_checkpoint(subscriber.name, row)
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


def drain(names: list[str] | None = None) -> int:
    """Drains the given (default: this process's outbox) subscribers until none has anything left."""
    selected = [get_subscriber(n) for n in names] if names else outbox_subscribers()
    total = 0
    while True:
        handled = sum(drain_subscriber(sub) for sub in subscribers_with_work(selected))
        total += handled
        if not handled:
            return total


# --- waking ---------------------------------------------------------------------------------------

_wake_event = wakeup.event


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
    _wake_event.set()
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


def wait_for_wake(timeout: float) -> bool:
    woke = _wake_event.wait(timeout)
    _wake_event.clear()
    return woke
