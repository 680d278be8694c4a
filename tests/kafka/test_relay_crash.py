"""The relay process SIGKILLed in the middle of its work and restarted: every message arrives at least
once, a duplicate is the same message (same event id), and a consumer applies each once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection, transaction

from apps.outbox import messages
from apps.outbox.kafka.consumer import AppConsumer
from apps.outbox.models import OutboxMessage
from apps.outbox.publish import outbox_append
from apps.outbox.reader import published_rows, unpublished_rows
from apps.projections.models import EscrowView
from proto.common.v1 import Money
from proto.escrow import v1 as escrow_v1
from tests.kafka.broker import end_offsets, read_since

pytestmark = [pytest.mark.kafka, pytest.mark.postgres_only]  # a second process needs a shared database

ROOT = Path(__file__).resolve().parents[2]
ROWS = 1000


def seed_created_escrows(count: int) -> None:
    with transaction.atomic():
        for _ in range(count):
            escrow_id = str(uuid.uuid4())
            outbox_append(
                message=escrow_v1.EscrowCreated(
                    escrow_id=escrow_id,
                    buyer_id=1,
                    seller_id=2,
                    amount=Money(amount_minor=1000, currency="USD"),
                    inspection_period_hours=72,
                ),
                aggregate_id=escrow_id,
                aggregate_version=1,
            )


def relay_process(kafka: str, *extra: str) -> subprocess.Popen[bytes]:
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


def test_relay_killed_mid_batch_and_restarted_delivers_everything_at_least_once(
    transactional_db, kafka, fresh_group, settings
):
    settings.BUS_OUTBOX_SUBSCRIBERS = []  # only the Kafka consumer applies these
    group = fresh_group("projections")
    since = end_offsets(kafka, [messages.ESCROW_EVENTS])
    seed_created_escrows(ROWS)

    relay = relay_process(kafka, "--batch-size", "7")
    deadline = time.monotonic() + 120
    while not published_rows().exists():
        assert relay.poll() is None, relay.stdout.read() if relay.stdout else ""
        assert time.monotonic() < deadline, "relay published nothing"
        time.sleep(0.005)
    relay.send_signal(signal.SIGKILL)
    relay.wait(30)
    published_before_kill = published_rows().count()
    assert 0 < published_before_kill < ROWS, "the relay must die with work left"

    restarted = relay_process(kafka, "--once")
    output, _ = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, output.decode()
    assert b"relay stopped: published=" in output
    assert not unpublished_rows().exists()

    records = read_since(kafka, since)
    rows = {str(row.event_id): row for row in OutboxMessage.objects.all()}
    seen = Counter(dict(r.headers)["event_id"].decode() for r in records)
    assert set(seen) == set(rows)  # nothing lost, nothing foreign
    for record in records:  # a duplicate is the same message, byte for byte
        row = rows[dict(record.headers)["event_id"].decode()]
        assert record.value == bytes(row.payload) and record.key.decode() == row.key

    stats = AppConsumer(app="projections", group_id=group).run(until_caught_up=True)
    assert stats.received == len(records)
    assert stats.applied == ROWS == EscrowView.objects.count()
    assert stats.duplicates == len(records) - ROWS
