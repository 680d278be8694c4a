"""The Kafka relay SIGKILLed again and again at random points (tests/kafka/test_relay_crash.py kills it
once): every outbox row is published at least once, a duplicate is the same record, each escrow's
messages keep their order (first appearances in aggregate-version order), and nothing is left unpublished."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from django.db import connection, transaction

from apps.outbox import messages
from apps.outbox.models import OutboxMessage
from apps.outbox.publish import outbox_append
from apps.outbox.reader import published_rows, unpublished_rows
from proto.common.v1 import Money
from proto.escrow import v1 as escrow_v1
from tests.kafka.broker import end_offsets, read_since
from tests.properties.figures import record_figures

pytestmark = [pytest.mark.kafka, pytest.mark.postgres_only]  # a second process needs the shared database

ROOT = Path(__file__).resolve().parents[2]
ESCROWS, VERSIONS, KILLS = 1000, 4, 6
SEED = int(os.environ.get("FAULTS_SEED", "0")) or random.randrange(1, 10**6)


def _seed() -> None:
    """ESCROWS escrows with VERSIONS messages each, written in interleaved transactions."""
    ids = [str(uuid.uuid4()) for _ in range(ESCROWS)]
    for version in range(1, VERSIONS + 1):
        with transaction.atomic():
            for escrow_id in ids:
                outbox_append(
                    message=escrow_v1.EscrowCreated(
                        escrow_id=escrow_id,
                        buyer_id=1,
                        seller_id=2,
                        amount=Money(amount_minor=1000, currency="USD"),
                        inspection_period_hours=72,
                    ),
                    aggregate_id=escrow_id,
                    aggregate_version=version,
                    event_id=uuid.uuid4(),
                )


def _relay(kafka: str, *extra: str) -> subprocess.Popen[bytes]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_ENABLE_IDEMPOTENCE": "0",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "relay_outbox", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _published() -> int:
    return published_rows().count()


def test_a_relay_killed_at_random_points_publishes_everything_in_order(transactional_db, kafka, settings):
    settings.BUS_OUTBOX_SUBSCRIBERS = []  # only the relay reads these rows
    rng = random.Random(SEED)
    since = end_offsets(kafka, [messages.ESCROW_EVENTS])
    _seed()
    total = ESCROWS * VERSIONS
    kills = 0

    for _ in range(KILLS):
        before = _published()
        if before == total:
            break
        relay = _relay(kafka, "--batch-size", str(rng.randint(3, 40)))
        try:
            target = before + rng.randint(1, max(1, (total - before) // 3))
            deadline = time.monotonic() + 120
            while _published() < target:
                assert relay.poll() is None, relay.stdout.read() if relay.stdout else b""
                assert time.monotonic() < deadline, "the relay made no progress"
                time.sleep(rng.uniform(0, 0.01))
            time.sleep(rng.uniform(0, 0.05))  # so the kill lands anywhere in the next batch
        finally:
            relay.send_signal(signal.SIGKILL)
            relay.wait(30)
        kills += 1
    assert kills >= 3, "the relay must die several times with work left"

    final = _relay(kafka, "--once")
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output.decode()
    assert not unpublished_rows().exists()

    rows = {str(row.event_id): row for row in OutboxMessage.objects.all()}
    records = read_since(kafka, since)
    seen = Counter(dict(r.headers)["event_id"].decode() for r in records)
    assert set(seen) == set(rows)  # nothing lost, nothing foreign
    first_seen: dict[str, list[int]] = defaultdict(list)  # key -> versions, in first-appearance order
    appeared: set[str] = set()
    for record in records:  # records of one key share a partition, so this is the broker's order
        event_id = dict(record.headers)["event_id"].decode()
        row = rows[event_id]
        assert record.value == bytes(row.payload) and record.key.decode() == row.key
        if event_id not in appeared:
            appeared.add(event_id)
            first_seen[row.key].append(row.aggregate_version)
    for key, versions in first_seen.items():
        assert versions == list(range(1, VERSIONS + 1)), (key, versions)
    record_figures(
        "relay kills",
        {"relays SIGKILLed": kills, "messages": total, "duplicates published": len(records) - total, "last seed": SEED},
    )
