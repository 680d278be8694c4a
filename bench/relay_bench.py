"""Relay throughput: the outbox relay vs a raw aiokafka producer sending the same records in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/escrow_relaybench .venv/bin/python bench/relay_bench.py

Starts a Tansu broker on a free loopback port unless KAFKA_BOOTSTRAP_SERVERS is set; migrates the
database (use one of its own: it refuses a database with unpublished rows). Each round seeds --events
outbox rows and publishes them both ways back to back, each side twice in the order A B B A (and
alternating which side is A from round to round), so a load that drifts through the round weighs on both
sides alike; it prints a line (rates over both passes, the load average before the round) and deletes its
rows. A first warm-up round (--warmup) is printed and left out; the last line gives the median and the
worst ratio. Both sides use the producer `make_producer` builds (acks=all, the same linger, batch size,
idempotence and no compression); the relay's time includes its start (lease, backlog line, producer) and
waiting until its last mark is written.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "escrow_project.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Seeding must not run every subscriber inline: the bench measures the relay alone.
os.environ.setdefault("BUS_INLINE_DISPATCH", "0")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from apps.outbox import messages  # noqa: E402
from apps.outbox.kafka.client import make_producer  # noqa: E402
from apps.outbox.kafka.envelope import headers_for  # noqa: E402
from apps.outbox.kafka.relay import OutboxRelay  # noqa: E402
from apps.outbox.models import OutboxMessage  # noqa: E402
from apps.outbox.reader import unpublished_rows  # noqa: E402
from proto.common.v1 import Money  # noqa: E402
from proto.escrow import v1 as escrow_v1  # noqa: E402

_COLUMNS = (
    "event_id",
    "topic",
    "key",
    "type",
    "aggregate_id",
    "aggregate_version",
    "payload",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "traceparent",
)


def _created(escrow_id: str) -> escrow_v1.EscrowCreated:
    return escrow_v1.EscrowCreated(
        escrow_id=escrow_id,
        buyer_id=1,
        seller_id=2,
        amount=Money(amount_minor=14999, currency="USD"),
        inspection_period_hours=72,
    )


def seed(count: int) -> list[int]:
    """`count` EscrowCreated rows of new escrows, written in one transaction with the values
    `outbox_append` gives them (the txid from the column's default), by COPY on PostgreSQL: the relay
    reads the same rows, and seeding takes a second, not most of a round. The payloads are one encoding
    with each escrow id spliced in (same length, so the same bytes as encoding each message)."""
    name = messages.type_name(escrow_v1.EscrowCreated)
    placeholder = "00000000-0000-4000-8000-000000000000"
    template = bytes(_created(placeholder))
    topic = messages.topic_for(_created(placeholder))
    probe = str(uuid.uuid4())
    assert template.replace(placeholder.encode(), probe.encode()) == bytes(_created(probe))
    values = []
    for _ in range(count):
        escrow_id = str(uuid.uuid4())
        values.append(
            (
                messages.deterministic_id(escrow_id, 1, name),
                topic,
                escrow_id,
                name,
                escrow_id,
                1,
                template.replace(placeholder.encode(), escrow_id.encode()),
                timezone.now(),
                "",
                "",
                "",
            )
        )
    table = OutboxMessage._meta.db_table
    with transaction.atomic():
        if connection.vendor != "postgresql":
            rows = [OutboxMessage(**dict(zip(_COLUMNS, row, strict=True))) for row in values]
            return [row.id for row in OutboxMessage.objects.bulk_create(rows, batch_size=1000)]
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)
            cursor.execute(
                f"SELECT id FROM {table} WHERE txid = pg_current_xact_id()::text::bigint ORDER BY id"  # noqa: S608
            )
            return [id_ for (id_,) in cursor.fetchall()]


Prepared = tuple[str, bytes, bytes, list[tuple[str, bytes]], int]


def prepare(rows: list[OutboxMessage]) -> list[Prepared]:
    """What the relay sends for each row (topic, value, key, envelope headers, occurred_at as the record
    timestamp), built before the clock starts: the raw producer is timed on sending alone."""
    return [
        (row.topic, bytes(row.payload), row.key.encode(), headers_for(row), int(row.occurred_at.timestamp() * 1000))
        for row in rows
    ]


async def raw_producer(servers: str, records: list[Prepared], batch_size: int) -> tuple[float, list[float]]:
    """aiokafka's `send()` per record with the relay's producer settings (make_producer: acks=all, linger,
    batch size, no compression), awaiting each batch's acks before sending the next."""
    producer = make_producer(servers, client_id="bench-raw")
    await producer.start()
    latencies: list[float] = []
    try:
        started = time.perf_counter()
        for offset in range(0, len(records), batch_size):
            batch_started = time.perf_counter()
            futures = [
                await producer.send(topic, value=value, key=key, headers=headers, timestamp_ms=timestamp_ms)
                for topic, value, key, headers, timestamp_ms in records[offset : offset + batch_size]
            ]
            await asyncio.gather(*futures)
            latencies.append((time.perf_counter() - batch_started) * 1000)
        return time.perf_counter() - started, latencies
    finally:
        await producer.stop()


def delete(ids: list[int]) -> None:
    """The round's rows go in one statement (the ORM's delete collects them first: seconds per round)."""
    if connection.vendor != "postgresql":
        OutboxMessage.objects.filter(id__in=ids).delete()
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {OutboxMessage._meta.db_table} WHERE id = ANY(%s::bigint[])",  # noqa: S608
            ["{" + ",".join(map(str, ids)) + "}"],
        )


def vacuum() -> None:
    """Fresh planner statistics and no dead index entries from earlier runs' deleted rows (what
    autovacuum gives a production table), so each run measures the relay, not the bloat."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {OutboxMessage._meta.db_table}")


def load_average() -> str:
    """The 1-minute load average before a round (the machine may be shared)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Round:
    raw_rate: float
    raw_ms: list[float]
    relay_rate: float
    relay_ms: list[float]

    @property
    def ratio(self) -> float:
        return self.relay_rate / self.raw_rate


def run_round(servers: str, events: int, batch_size: int, relay_first: bool) -> Round:
    """Each side publishes `events` records twice, in the order A B B A (relay, raw, raw, relay when
    `relay_first`, else raw, relay, relay, raw), one pass right after the other, and each side's rate is
    over its two passes: a load that rises or falls steadily through the round weighs on both sides alike.
    The raw producer sends records prepared in memory from the first seeded rows; the relay publishes rows
    seeded for its pass (fresh ones for its second: it only reads unpublished rows)."""
    vacuum()
    ids = seed(events)
    try:
        vacuum()
        records = prepare(list(OutboxMessage.objects.filter(id__in=ids).order_by("txid", "id")))
        # The prepared records are the bench's, not a relay's: keep them out of both sides' garbage collection.
        gc.collect()
        gc.freeze()
        relay_passes = 0
        raw_seconds = relay_seconds = 0.0
        raw_ms: list[float] = []
        relay_ms: list[float] = []
        for side in ("relay", "raw", "raw", "relay") if relay_first else ("raw", "relay", "relay", "raw"):
            if side == "raw":
                seconds, latencies = asyncio.run(raw_producer(servers, records, batch_size))
                raw_seconds += seconds
                raw_ms += latencies
                continue
            if relay_passes:  # the first pass published the seeded rows: seed as many again, untimed
                ids += seed(events)
                vacuum()
                gc.collect()
                gc.freeze()
            relay_passes += 1
            started = time.perf_counter()
            stats = OutboxRelay(servers=servers, batch_size=batch_size).run(once=True)
            relay_seconds += time.perf_counter() - started
            assert stats.published == events, stats.summary()
            relay_ms += stats.batch_ms
        return Round(2 * events / raw_seconds, raw_ms, 2 * events / relay_seconds, relay_ms)
    finally:
        gc.unfreeze()
        delete(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=settings.KAFKA_RELAY_BATCH_SIZE)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of raw and relay back to back (A B B A), alternating which goes first",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="rounds run first and discarded (imports, connections, the broker's first appends, caches)",
    )
    args = parser.parse_args()

    broker = None
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if not servers:
        from tests.kafka.broker import TansuBroker

        broker = TansuBroker()
        broker.start()
        servers = broker.bootstrap
        settings.KAFKA_ENABLE_IDEMPOTENCE = False  # Tansu refuses the idempotent producer
    settings.KAFKA_BOOTSTRAP_SERVERS = servers
    try:
        call_command("migrate", verbosity=0)  # inside the try: a missing database must not leave the broker
        backlog_before = unpublished_rows().count()
        if backlog_before:
            sys.exit(f"{backlog_before} unpublished rows already in this database: use a dedicated one")
        print(
            f"{args.events} events per pass, each side twice a round (A B B A), {args.warmup} warm-up round(s) "
            f"discarded; batch size {args.batch_size}, both sides: acks=all, linger {settings.KAFKA_LINGER_MS} ms, "
            f"idempotence {'on' if settings.KAFKA_ENABLE_IDEMPOTENCE else 'off'}, no compression; "
            f"database {connection.vendor}, broker {'Tansu (local)' if broker else servers}"
        )
        print(
            f"{'round':<7}{'first':<7}{'raw ev/s':>10}{'p50 ms':>8}{'p95 ms':>8}"
            f"{'relay ev/s':>12}{'p50 ms':>8}{'p95 ms':>8}{'relay/raw':>11}{'load':>7}"
        )
        rounds: list[Round] = []
        for number in range(1 - args.warmup, args.rounds + 1):
            relay_first = number % 2 == 0
            load = load_average()
            result = run_round(servers, args.events, args.batch_size, relay_first)
            if number > 0:
                rounds.append(result)
            print(
                f"{number if number > 0 else 'warm':<7}{'relay' if relay_first else 'raw':<7}{result.raw_rate:>10,.0f}"
                f"{pct(result.raw_ms, 50):>8.1f}{pct(result.raw_ms, 95):>8.1f}{result.relay_rate:>12,.0f}"
                f"{pct(result.relay_ms, 50):>8.1f}{pct(result.relay_ms, 95):>8.1f}{result.ratio:>11.2f}{load:>7}"
                f"{'  (warm-up, discarded)' if number <= 0 else ''}",
                flush=True,
            )
        ratios = [r.ratio for r in rounds]
        print(
            f"relay / raw: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}; "
            f"relay events/s: median {statistics.median(r.relay_rate for r in rounds):,.0f}, "
            f"min {min(r.relay_rate for r in rounds):,.0f}  (target: >= 5,000 events/s and >= 0.5)"
        )
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
