"""Relay throughput: the outbox relay vs a raw aiokafka producer sending the same records in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/escrow_bench .venv/bin/python bench/relay_bench.py

Starts a Tansu broker on a free loopback port unless KAFKA_BOOTSTRAP_SERVERS is set; migrates the
database, seeds --events outbox rows, publishes them both ways, prints a table, deletes its rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
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

from apps.outbox.kafka.client import make_producer  # noqa: E402
from apps.outbox.kafka.envelope import headers_for  # noqa: E402
from apps.outbox.kafka.relay import OutboxRelay, RelayStats  # noqa: E402
from apps.outbox.models import OutboxMessage  # noqa: E402
from apps.outbox.publish import outbox_append  # noqa: E402
from proto.common.v1 import Money  # noqa: E402
from proto.escrow import v1 as escrow_v1  # noqa: E402


def seed(count: int) -> list[int]:
    ids: list[int] = []
    with transaction.atomic():
        for _ in range(count):
            escrow_id = str(uuid.uuid4())
            row = outbox_append(
                message=escrow_v1.EscrowCreated(escrow_id=escrow_id, buyer_id=1, seller_id=2,
                                                amount=Money(amount_minor=14999, currency="USD"),
                                                description="bench", inspection_period_hours=72),
                aggregate_id=escrow_id, aggregate_version=1)
            ids.append(row.id)
    return ids


async def raw_producer(servers: str, rows: list[OutboxMessage], batch_size: int) -> tuple[float, list[float]]:
    producer = make_producer(servers, client_id="bench-raw")
    await producer.start()
    latencies: list[float] = []
    try:
        started = time.perf_counter()
        for offset in range(0, len(rows), batch_size):
            batch_started = time.perf_counter()
            futures = [await producer.send(row.topic, value=bytes(row.payload), key=row.key.encode(),
                                           headers=headers_for(row)) for row in rows[offset:offset + batch_size]]
            await asyncio.gather(*futures)
            latencies.append((time.perf_counter() - batch_started) * 1000)
        return time.perf_counter() - started, latencies
    finally:
        await producer.stop()


def vacuum() -> None:
    """Fresh planner statistics and no dead index entries from earlier runs' deleted rows (what
    autovacuum gives a production table), so each run measures the relay, not the bloat."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {OutboxMessage._meta.db_table}")


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=settings.KAFKA_RELAY_BATCH_SIZE)
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
    call_command("migrate", verbosity=0)
    ids: list[int] = []
    try:
        backlog_before = OutboxMessage.objects.filter(published_at__isnull=True).count()
        if backlog_before:
            sys.exit(f"{backlog_before} unpublished rows already in this database: use a dedicated one")
        vacuum()
        ids = seed(args.events)
        vacuum()
        rows = list(OutboxMessage.objects.filter(id__in=ids).order_by("txid", "id"))

        raw_seconds, raw_latencies = asyncio.run(raw_producer(servers, rows, args.batch_size))
        started = time.perf_counter()
        stats: RelayStats = OutboxRelay(servers=servers, batch_size=args.batch_size).run(once=True)
        relay_seconds = time.perf_counter() - started
        assert stats.published == len(rows), stats.summary()

        raw_rate, relay_rate = len(rows) / raw_seconds, len(rows) / relay_seconds
        print(f"\n{len(rows)} events, batch size {args.batch_size}, linger {settings.KAFKA_LINGER_MS} ms, "
              f"acks=all, database {connection.vendor}, broker {'Tansu (local)' if broker else servers}")
        print(f"{'':14}{'events/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
        for name, rate, lat in (("raw producer", raw_rate, raw_latencies), ("relay", relay_rate, stats.batch_ms)):
            print(f"{name:14}{rate:>10,.0f}{pct(lat, 50):>9.1f}{pct(lat, 95):>9.1f}{pct(lat, 99):>9.1f}")
        print(f"relay / raw = {relay_rate / raw_rate:.2f}  (target: >= 5,000 events/s and >= 0.5)")
    finally:
        OutboxMessage.objects.filter(id__in=ids).delete()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
