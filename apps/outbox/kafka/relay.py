"""The outbox relay: forwards unpublished outbox rows to Kafka, at least once, in delivery order.

- Rows are read in (txid, id) order and, on PostgreSQL, only below the transaction-id watermark (as the
  in-process bus reads them), so a transaction that commits late is never overtaken by a newer one.
- Batches are pipelined: while one batch waits for the broker's acks (acks=all), the next is read and
  handed to the producer. Each batch goes to the producer as closed record batches, one per partition
  (`create_batch`/`send_batch`, the partition being the default partitioner's for the key), handed over
  whole and in delivery order; the producer sends one request per broker at a time and keeps each
  partition's batches in order, so the pipeline is ordered like one long batch.
- Progress is one checkpoint (txid, id) in delivery order (`RELAY_CHECKPOINT`, a SubscriberCheckpoint
  row): a row is published iff it is at or before it. The checkpoint moves once per acknowledged batch
  (or group of batches) with one small UPDATE of that row, on PostgreSQL by a thread of its own
  (`Marker`) while the next batches are read and sent; every mark is waited for before reading again from
  the checkpoint, so nothing acknowledged is sent twice by a healthy relay. (Marking each row published
  was a non-HOT update per row: new heap tuples and index entries, the relay's most expensive work.)
- The checkpoint moves only after the broker acknowledged, and only over the acknowledged prefix in
  delivery order: after the first failure nothing later moves it (not even rows acked after it), the
  pipeline drains and reading restarts from the checkpoint. A crash or broker outage therefore produces
  duplicates (same event id; consumers dedupe), never a gap. The UPDATE only ever moves it forward, so a
  relay that lost its lease cannot rewind it. Per-key order across producer retries needs the idempotent
  producer, the production default.
- One active relay per database (`RelayLease`); the others wait as standby.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from apps.outbox.kafka.client import LoopRunner, Pending, bootstrap_servers, make_producer, partition_for
from apps.outbox.kafka.envelope import Headers, envelope_headers
from apps.outbox.kafka.leadership import RelayLease
from apps.outbox.models import OutboxMessage
from apps.outbox.reader import (
    XID_WATERMARK_SQL,
    advance_relay_checkpoint,
    backlog,
    relay_position,
    rows_after,
    unpublished_rows,
)

log = logging.getLogger(__name__)


ValueEncoder = Callable[[str, str, bytes], bytes]
"""(topic, type name, protobuf payload) -> record value; the Schema Registry framing plugs in here."""

_RECORD_FIELDS = (
    "id",
    "txid",
    "topic",
    "key",
    "payload",
    "event_id",
    "type",
    "aggregate_id",
    "aggregate_version",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "traceparent",
)


class RelayRecord(NamedTuple):
    """One outbox row, ready for the producer (plain values: no model instance per row). A named tuple:
    built for every row, and about five times cheaper to build than a frozen dataclass."""

    id: int
    txid: int
    topic: str
    key: bytes
    value: bytes
    headers: Headers
    timestamp_ms: int


def records_from(rows: QuerySet[OutboxMessage], *, encode_value: ValueEncoder | None = None) -> list[RelayRecord]:
    return _records(rows.values_list(*_RECORD_FIELDS), encode_value=encode_value)


# Python's `datetime.isoformat()` of a UTC timestamp (microseconds only when non-zero), so the header is the
# same text whichever path built it (tests/kafka/test_relay_batching.py compares them).
_OCCURRED_AT_ISO_SQL = (
    "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
    "CASE WHEN date_part('microseconds', occurred_at)::bigint %% 1000000 = 0 THEN '' "
    "ELSE to_char(occurred_at AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MILLISECOND = datetime.timedelta(milliseconds=1)


def _fetch_postgresql(*, limit: int, after: tuple[int, int]) -> list[tuple[Any, ...]]:
    """The hot read, in SQL: the header values come back as ready text (no UUID or datetime objects per
    row), the row comparison walks the delivery-order index from the cursor, and only rows below the bus's
    xid watermark count, so a late-committing row is never published out of order."""
    table = OutboxMessage._meta.db_table
    sql = (
        f"SELECT id, txid, topic, key, payload, event_id::text, type, aggregate_id, "  # noqa: S608
        f"aggregate_version::text, {_OCCURRED_AT_ISO_SQL}, "
        f"floor(extract(epoch FROM occurred_at) * 1000)::bigint, correlation_id, causation_id, traceparent "
        f"FROM {table} WHERE (txid, id) > (%s, %s) AND txid < {XID_WATERMARK_SQL} "
        f"ORDER BY txid, id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*after, limit])
        return cursor.fetchall()


def _records_postgresql(rows: Iterable[tuple[Any, ...]], *, encode_value: ValueEncoder | None) -> list[RelayRecord]:
    records: list[RelayRecord] = []
    append = records.append
    for (
        id_,
        txid,
        topic,
        key,
        payload,
        event_id,
        type_name,
        aggregate_id,
        aggregate_version,
        occurred_at,
        timestamp_ms,
        correlation_id,
        causation_id,
        traceparent,
    ) in rows:
        value = bytes(payload) if encode_value is None else _encode(encode_value, topic, type_name, payload)
        # HEADER_NAMES order, as envelope_headers() builds them.
        append(
            RelayRecord(
                id_,
                txid,
                topic,
                key.encode(),
                value,
                [
                    ("event_id", event_id.encode()),
                    ("type", type_name.encode()),
                    ("aggregate_id", aggregate_id.encode()),
                    ("aggregate_version", aggregate_version.encode()),
                    ("occurred_at", occurred_at.encode()),
                    ("correlation_id", correlation_id.encode()),
                    ("causation_id", causation_id.encode()),
                    ("traceparent", traceparent.encode()),
                ],
                timestamp_ms,
            )
        )
    return records


def _encode(encode_value: ValueEncoder, topic: str, type_name: str, payload: bytes) -> bytes:
    try:
        return encode_value(topic, type_name, bytes(payload))
    except Exception as exc:  # noqa: BLE001 - e.g. the schema registry is down: retry the batch later
        raise PublishFailed(f"cannot encode {type_name} for {topic}: {exc!r}") from exc


def _records(rows: Iterable[tuple[Any, ...]], *, encode_value: ValueEncoder | None) -> list[RelayRecord]:
    records = []
    for (
        id_,
        txid,
        topic,
        key,
        payload,
        event_id,
        type_name,
        aggregate_id,
        aggregate_version,
        occurred_at,
        correlation_id,
        causation_id,
        traceparent,
    ) in rows:
        value = bytes(payload) if encode_value is None else _encode(encode_value, topic, type_name, payload)
        records.append(
            RelayRecord(
                id=id_,
                txid=txid,
                topic=topic,
                key=key.encode(),
                value=value,
                headers=envelope_headers(
                    event_id=event_id,
                    type_name=type_name,
                    aggregate_id=aggregate_id,
                    aggregate_version=aggregate_version,
                    occurred_at=occurred_at,
                    correlation_id=correlation_id,
                    causation_id=causation_id,
                    traceparent=traceparent,
                ),
                timestamp_ms=(occurred_at - _EPOCH) // _MILLISECOND,  # exact, as the SQL path's floor()
            )
        )
    return records


def publishable_records(
    *, limit: int, after: tuple[int, int] | None = None, encode_value: ValueEncoder | None = None
) -> list[RelayRecord]:
    """The next rows in delivery order strictly after `after` (keyset pagination), by default after the
    relay's checkpoint (the oldest unpublished row).

    Keyset is safe with the watermark: every row below it belongs to a finished transaction, so a row
    that sorts before the cursor was either seen already or failed (and a failure resets the cursor to
    the checkpoint, which only covers acknowledged rows)."""
    position = after if after is not None else relay_position()
    if connection.vendor == "postgresql":
        return _records_postgresql(_fetch_postgresql(limit=limit, after=position), encode_value=encode_value)
    rows = OutboxMessage.objects.filter(rows_after(*position)).order_by("txid", "id")  # SQLite: txid is 0
    return records_from(rows[:limit], encode_value=encode_value)


def mark_published(position: tuple[int, int] | None) -> None:
    """Every row up to `position` (the last of an acknowledged prefix) is published."""
    if position is not None:
        advance_relay_checkpoint(position)


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    failures: int = 0
    batch_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.batch_ms:
            return 0.0
        if len(self.batch_ms) == 1:
            return self.batch_ms[0]
        return statistics.quantiles(self.batch_ms, n=100, method="inclusive")[int(q) - 1]

    def summary(self) -> str:
        return (
            f"published={self.published} batches={self.batches} failures={self.failures} "
            f"batch_ms p50={self.percentile(50):.1f} p95={self.percentile(95):.1f} "
            f"p99={self.percentile(99):.1f}"
        )


class PublishFailed(RuntimeError):
    pass


def _close_connection() -> None:
    connection.close()  # `connection` is per thread: this closes the calling thread's own


class Marker:
    """Moves the relay's checkpoint on a thread of its own, with its own database connection, so the
    UPDATE runs while the relay reads and sends the next batches. It only ever moves it over rows the
    broker acknowledged; `drain()` waits for every mark handed over, and the relay drains before it reads
    from the checkpoint again (idle, after a failure, on exit), so a row whose mark is still on its way is
    never re-read and resent.

    Batches acknowledged while an UPDATE runs wait for it and then go together in one UPDATE (to the last
    position handed over: they come in delivery order), so a marker that falls behind catches up with
    fewer statements. A failed mark is raised at the next `submit` or `drain`, and nothing handed over
    after it is marked (the rows stay unpublished, and the checkpoint stays at an acknowledged prefix:
    they are resent later)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-mark")
        self._pending: deque[Future[None]] = deque()
        self._lock = threading.Lock()
        self._waiting: tuple[int, int] | None = None  # acknowledged up to here, not yet taken by an UPDATE
        self._failed = False

    def submit(self, position: tuple[int, int] | None) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()
        if position is None:
            return
        with self._lock:
            # A job queued and not started yet takes this position instead of its own; otherwise one is queued.
            queued = self._waiting is not None
            self._waiting = position
        if not queued:
            self._pending.append(self._executor.submit(self._mark_waiting))

    def _mark_waiting(self) -> None:
        with self._lock:
            position, self._waiting = self._waiting, None
        if self._failed:
            return
        try:
            mark_published(position)
        except BaseException:
            self._failed = True
            raise

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._executor.submit(_close_connection).result()
            self._executor.shutdown()


@dataclass
class InFlight:
    records: list[RelayRecord]
    outcomes: Pending[list[object]]
    started: float


class OutboxRelay:
    def __init__(
        self,
        *,
        servers: str | None = None,
        batch_size: int | None = None,
        pipeline_depth: int = 2,
        poll_seconds: float = 0.2,
        standby_seconds: float = 1.0,
        progress_seconds: float = 5.0,
        encode_value: ValueEncoder | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.servers = bootstrap_servers(servers)
        self.batch_size = batch_size or settings.KAFKA_RELAY_BATCH_SIZE
        self.pipeline_depth = max(1, pipeline_depth)
        self.poll_seconds = poll_seconds
        self.standby_seconds = standby_seconds
        self.progress_seconds = progress_seconds
        self.encode_value = encode_value if encode_value is not None else _encoder_from_settings()
        self.report = report or (lambda line: log.info(line))
        self.stopping = threading.Event()
        self.active = threading.Event()
        self.stats = RelayStats()
        self._loop = LoopRunner()
        self._producer: AIOKafkaProducer | None = None
        self._marker: Marker | None = None
        self._enqueue_lock = asyncio.Lock()  # binds to the relay's loop on first use
        self._last_progress = 0.0

    def stop(self) -> None:
        """Finish the batches in hand, then exit (SIGTERM)."""
        self.stopping.set()

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> RelayStats:
        lease = RelayLease()
        try:
            if not self._wait_for_lease(lease):
                return self.stats
            self.active.set()
            relay_position()  # the checkpoint row exists before anything is marked (created at the start)
            self.report(f"relay active; {backlog()}")
            self._pump(lease, once=once)
            return self.stats
        finally:
            self.active.clear()
            self.close()
            lease.release()

    def _pump(self, lease: RelayLease, *, once: bool) -> None:
        thresholds = gc.get_threshold()
        # Each row read allocates a few dozen objects that never form a cycle (the row tuple and its
        # values, the record, its headers): with the default thresholds the collector runs every 700
        # allocations, dozens of times a batch, and in `relay_bench.py` took a tenth to a quarter of the
        # relay's time. While pumping, young objects are collected every 50,000 allocations instead.
        gc.set_threshold(50_000, thresholds[1], thresholds[2])
        try:
            self._pump_rows(lease, once=once)
        finally:
            gc.set_threshold(*thresholds)

    def _pump_rows(self, lease: RelayLease, *, once: bool) -> None:
        window: deque[InFlight] = deque()
        cursor: tuple[int, int] | None = None
        # Marking on another connection needs rows that other connections see: PostgreSQL, autocommit.
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            self._marker = Marker()
        try:
            while not self.stopping.is_set():
                if len(window) < self.pipeline_depth:
                    # Before new work (not before settling: marking what the broker acknowledged is always
                    # right), one round trip on the lock's connection.
                    if not lease.still_held():
                        raise PublishFailed("lost the relay lock connection; stopping so a standby can take over")
                    # Read (and hand over) the next batch while the earlier ones wait for their acks.
                    try:
                        records = publishable_records(
                            limit=self.batch_size, after=cursor, encode_value=self.encode_value
                        )
                        if records:
                            window.append(self._submit(records))
                    except PublishFailed as exc:
                        self._after_failure(window, exc, once=once)
                        cursor = None
                        continue
                    if records:
                        cursor = (records[-1].txid, records[-1].id)
                        continue
                if window:
                    try:
                        self._settle(window.popleft())
                    except PublishFailed as exc:
                        self._after_failure(window, exc, once=once)
                        cursor = None
                        continue
                    self._progress()
                    continue
                # Idle: restart from the checkpoint next time (cheap, and robust), once every acknowledged
                # batch is marked.
                self._drain_marks()
                cursor = None
                if once and not unpublished_rows().exists():
                    break
                self.stopping.wait(self.poll_seconds)
        finally:
            # SIGTERM or an error: what is already with the producer is waited for and, if acknowledged
            # in order, marked, so a clean stop leaves no duplicates behind.
            try:
                while window:
                    try:
                        self._settle(window.popleft())
                    except PublishFailed:
                        self._abandon(window)
            finally:
                marker, self._marker = self._marker, None
                if marker is not None:
                    marker.close()

    def _drain_marks(self) -> None:
        if self._marker is not None:
            self._marker.drain()

    def _after_failure(self, window: deque[InFlight], exc: PublishFailed, *, once: bool) -> None:
        self._abandon(window)
        self._drain_marks()
        self.stats.failures += 1
        if once:
            raise exc
        self.report(f"relay batch failed, will retry: {exc}; {backlog()}")
        self.stopping.wait(min(5.0, 0.5 * self.stats.failures))

    def _abandon(self, window: deque[InFlight]) -> None:
        """After a failure, later batches must not be marked (that would leave a gap before them in
        delivery order): wait for them to settle, mark nothing; they are sent again."""
        while window:
            window.popleft().outcomes.wait()

    def _wait_for_lease(self, lease: RelayLease) -> bool:
        announced = False
        while not self.stopping.is_set():
            if lease.try_acquire():
                return True
            if not announced:
                self.report("relay standby: another relay holds the lock")
                announced = True
            self.stopping.wait(self.standby_seconds)
        return False

    def _progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= self.progress_seconds:
            self._last_progress = now
            self.report(f"relay progress: published={self.stats.published} {backlog()}")

    # --- publishing -------------------------------------------------------------------------------

    def _start_producer(self) -> None:
        self._producer = self._loop.build(lambda: make_producer(self.servers))
        try:
            self._loop.run(self._producer.start())
        except Exception:
            self._loop.run(self._producer.stop())
            self._producer = None
            raise

    def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            try:
                self._start_producer()
            except Exception as exc:  # noqa: BLE001 - broker unreachable: a retryable batch failure
                raise PublishFailed(f"cannot connect to {self.servers}: {exc!r}") from exc
        assert self._producer is not None
        return self._producer

    def _submit(self, records: list[RelayRecord]) -> InFlight:
        producer = self._ensure_producer()
        return InFlight(
            records, self._loop.start(_send_all(producer, records, self._enqueue_lock)), time.perf_counter()
        )

    def _settle(self, batch: InFlight) -> int:
        """Waits for a batch's acks and moves the checkpoint over its acknowledged prefix."""
        return self._acknowledged(batch, mark=True)

    def _acknowledged(self, batch: InFlight, *, mark: bool) -> int:
        outcomes = batch.outcomes.result()
        acked = 0
        error: object | None = None
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                error = outcome
                break
            acked += 1
        if mark:
            last = batch.records[acked - 1] if acked else None
            position = (last.txid, last.id) if last is not None else None
            if self._marker is not None:
                self._marker.submit(position)
            else:
                mark_published(position)
        self.stats.batch_ms.append((time.perf_counter() - batch.started) * 1000)
        self.stats.batches += 1
        self.stats.published += acked
        if error is not None:
            raise PublishFailed(f"{acked}/{len(batch.records)} acknowledged; first error: {error!r}")
        return acked

    def publish_batch(self, records: list[RelayRecord]) -> int:
        """Sends one batch and waits for it (replay, scripts); the loop pipelines instead. It does not move
        the checkpoint: the records are any selection (a replay), not the next rows in delivery order."""
        return self._acknowledged(self._submit(records), mark=False)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._loop.run(self._producer.stop())
            except Exception:  # noqa: BLE001 - closing a producer to a dead broker may fail; nothing to lose
                log.warning("relay producer did not close cleanly", exc_info=True)
            self._producer = None
        self._loop.close()


class NotSent(RuntimeError):
    """A record that was never handed to the producer because an earlier enqueue failed."""


async def _send_all(producer: AIOKafkaProducer, records: list[RelayRecord], enqueue_lock: asyncio.Lock) -> list[object]:
    """Sends the records as closed batches, one per partition (more if one fills up), each in delivery
    order, and returns every record's outcome: its batch's metadata, or the exception that failed it.

    The partition is the one the default partitioner would give the key (`partition_for`), so a key keeps
    its partition. Handing a batch to the producer can wait (for the partition's previous batch to leave),
    so the pipelined calls take `enqueue_lock` (first come, first served) to hand over their batches whole
    and in delivery order; per partition the producer then sends them in that order, one request per broker
    at a time. Closed batches do not linger: the relay already has everything it is going to send."""
    outcomes: list[object] = [None] * len(records)
    sent: list[tuple[list[int], asyncio.Future[object]]] = []
    async with enqueue_lock:
        groups: dict[tuple[str, int], list[int]] = {}
        try:
            partitions: dict[str, list[int]] = {}
            for index, record in enumerate(records):
                topic = record.topic
                known = partitions.get(topic)
                if known is None:
                    known = partitions[topic] = list(await producer.partitions_for(topic))
                groups.setdefault((topic, partition_for(record.key, known)), []).append(index)
        except Exception as exc:  # noqa: BLE001 - no metadata for a topic: nothing is sent, all retried
            return [exc] * len(records)

        failure: BaseException | None = None
        for (topic, partition), indices in groups.items():
            start = 0
            while start < len(indices) and failure is None:
                batch = producer.create_batch()
                end = start
                while end < len(indices):  # the first record always fits, so each batch takes at least one
                    record = records[indices[end]]
                    if (
                        batch.append(
                            timestamp=record.timestamp_ms, key=record.key, value=record.value, headers=record.headers
                        )
                        is None
                    ):
                        break
                    end += 1
                batch.close()
                try:
                    sent.append((indices[start:end], await producer.send_batch(batch, topic, partition=partition)))
                except Exception as exc:  # noqa: BLE001 - enqueueing failed: this batch and the rest are not sent
                    failure = exc
                start = end
            if failure is not None:
                break
        if failure is not None:
            outcomes = [NotSent(f"not sent after: {failure!r}")] * len(records)
    results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
    for (indices, _), result in zip(sent, results, strict=True):
        for index in indices:
            outcomes[index] = result
    return outcomes


def _encoder_from_settings() -> ValueEncoder | None:
    if not settings.SCHEMA_REGISTRY_URL:
        return None
    from apps.outbox.kafka.schema_registry import ConfluentProtobufFraming

    return ConfluentProtobufFraming(url=settings.SCHEMA_REGISTRY_URL).encode


def relay_once(*, servers: str | None = None) -> RelayStats:
    """Publishes everything pending and returns (for scripts and tests)."""
    return OutboxRelay(servers=servers).run(once=True)
