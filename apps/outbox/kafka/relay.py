"""The outbox relay: forwards unpublished outbox rows to Kafka, at least once, in delivery order.

- Rows are read in (txid, id) order and, on PostgreSQL, only below the transaction-id watermark (as the
  in-process bus reads them), so a transaction that commits late is never overtaken by a newer one.
- A batch is handed to the producer in that order (per-key order across producer retries needs the
  idempotent producer, the production default); `published_at` is set only after the broker
  acknowledged (acks=all). If part
  of a batch fails, only the acknowledged prefix is marked: the rest is sent again, so a crash or a
  broker outage produces duplicates (same event id; consumers dedupe), never a gap.
- One active relay per database (`RelayLease`); the others wait as standby.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.outbox.kafka.client import LoopRunner, bootstrap_servers, make_producer
from apps.outbox.kafka.envelope import headers_for
from apps.outbox.kafka.leadership import RelayLease
from apps.outbox.models import OutboxMessage

log = logging.getLogger(__name__)

# The same watermark as apps.outbox.bus: rows of transactions older than every running transaction.
_WATERMARK = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


def unpublished_rows() -> QuerySet[OutboxMessage]:
    return OutboxMessage.objects.filter(published_at__isnull=True)


def publishable_rows(limit: int) -> list[OutboxMessage]:
    rows = unpublished_rows()
    if connection.vendor == "postgresql":
        rows = rows.filter(txid__lt=RawSQL(_WATERMARK, []))
    return list(rows.order_by("txid", "id")[:limit])


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age_seconds: float

    def __str__(self) -> str:
        return f"pending={self.pending} lag={self.oldest_age_seconds:.1f}s"


def backlog() -> Backlog:
    """Relay lag: how many rows wait and the age of the oldest one."""
    rows = unpublished_rows()
    oldest = rows.order_by("occurred_at").values_list("occurred_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return Backlog(pending=rows.count(), oldest_age_seconds=max(age, 0.0))


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
        return (f"published={self.published} batches={self.batches} failures={self.failures} "
                f"batch_ms p50={self.percentile(50):.1f} p95={self.percentile(95):.1f} "
                f"p99={self.percentile(99):.1f}")


class PublishFailed(RuntimeError):
    pass


class OutboxRelay:
    def __init__(self, *, servers: str | None = None, batch_size: int | None = None,
                 poll_seconds: float = 0.2, standby_seconds: float = 1.0, progress_seconds: float = 5.0,
                 report: Callable[[str], None] | None = None) -> None:
        self.servers = bootstrap_servers(servers)
        self.batch_size = batch_size or settings.KAFKA_RELAY_BATCH_SIZE
        self.poll_seconds = poll_seconds
        self.standby_seconds = standby_seconds
        self.progress_seconds = progress_seconds
        self.report = report or (lambda line: log.info(line))
        self.stopping = threading.Event()
        self.active = threading.Event()
        self.stats = RelayStats()
        self._runner = LoopRunner()
        self._producer: AIOKafkaProducer | None = None
        self._last_progress = 0.0

    def stop(self) -> None:
        """Finish the batch in hand, then exit (SIGTERM)."""
        self.stopping.set()

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> RelayStats:
        lease = RelayLease()
        try:
            if not self._wait_for_lease(lease):
                return self.stats
            self.active.set()
            self.report(f"relay active; {backlog()}")
            while not self.stopping.is_set():
                if not lease.still_held():
                    raise PublishFailed("lost the relay lock connection; stopping so a standby can take over")
                rows = publishable_rows(self.batch_size)
                if not rows:
                    if once and not unpublished_rows().exists():
                        break
                    self.stopping.wait(self.poll_seconds)
                    continue
                try:
                    self.publish_batch(rows)
                except PublishFailed as exc:
                    self.stats.failures += 1
                    if once:
                        raise
                    self.report(f"relay batch failed, will retry: {exc}; {backlog()}")
                    self.stopping.wait(min(5.0, 0.5 * self.stats.failures))
                    continue
                self._progress()
            return self.stats
        finally:
            self.active.clear()
            self.close()
            lease.release()

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
        self._producer = self._runner.build(lambda: make_producer(self.servers))
        try:
            self._runner.run(self._producer.start())
        except Exception:
            self._runner.run(self._producer.stop())
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

    def publish_batch(self, rows: list[OutboxMessage]) -> int:
        """Sends rows in order, waits for the acks, marks the acknowledged prefix published."""
        producer = self._ensure_producer()
        started = time.perf_counter()
        outcomes = self._runner.run(_send_all(producer, rows))
        acked: list[int] = []
        error: BaseException | None = None
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                error = outcome
                break
            acked.append(row.id)
        if acked:
            OutboxMessage.objects.filter(id__in=acked).update(published_at=timezone.now())
        self.stats.batch_ms.append((time.perf_counter() - started) * 1000)
        self.stats.batches += 1
        self.stats.published += len(acked)
        if error is not None:
            raise PublishFailed(f"{len(acked)}/{len(rows)} acknowledged; first error: {error!r}")
        return len(acked)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._runner.run(self._producer.stop())
            except Exception:  # noqa: BLE001 - closing a producer to a dead broker may fail; nothing to lose
                log.warning("relay producer did not close cleanly", exc_info=True)
            self._producer = None
        self._runner.close()


async def _send_all(producer: AIOKafkaProducer, rows: list[OutboxMessage]) -> list[object]:
    futures: list[asyncio.Future[object]] = []
    for row in rows:
        try:
            futures.append(await producer.send(
                row.topic, value=bytes(row.payload), key=row.key.encode(), headers=headers_for(row),
                timestamp_ms=int(row.occurred_at.timestamp() * 1000),
            ))
        except Exception as exc:  # noqa: BLE001 - enqueueing failed (no metadata): this and the rest wait
            failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            futures.append(failed)
            break
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    return [*outcomes, *([PublishFailed("not sent")] * (len(rows) - len(outcomes)))]


def relay_once(*, servers: str | None = None) -> RelayStats:
    """Publishes everything pending and returns (for scripts and tests)."""
    return OutboxRelay(servers=servers).run(once=True)


