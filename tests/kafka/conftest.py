"""The Kafka test broker: KAFKA_BOOTSTRAP_SERVERS if set, else a Tansu broker on a free loopback port
for the whole session. Tansu refuses the idempotent producer, so these tests turn it off."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from apps.outbox import messages
from apps.outbox.kafka.admin import ensure_topics
from tests.kafka.broker import GROUP_TIMINGS, TEST_PARTITIONS, TansuBroker, park_group_at_end


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        asyncio.run(ensure_topics(servers=external, partitions=TEST_PARTITIONS, replication_factor=1))
        yield external
        return
    broker = TansuBroker()
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka(kafka_bootstrap: str, settings: object) -> str:
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_bootstrap  # type: ignore[attr-defined]
    settings.KAFKA_ENABLE_IDEMPOTENCE = False  # type: ignore[attr-defined]
    settings.KAFKA_LINGER_MS = 2  # type: ignore[attr-defined]
    settings.KAFKA_SESSION_TIMEOUT_MS = GROUP_TIMINGS["session_timeout_ms"]  # type: ignore[attr-defined]
    settings.KAFKA_HEARTBEAT_INTERVAL_MS = GROUP_TIMINGS["heartbeat_interval_ms"]  # type: ignore[attr-defined]
    settings.BUS_RETRY_BASE_SECONDS = 0.01  # type: ignore[attr-defined]
    return kafka_bootstrap


@pytest.fixture
def fresh_group(kafka: str) -> object:
    """fresh_group(app) -> a consumer group name for this test, parked after earlier tests' records."""

    def make(app: str) -> str:
        group = f"{app}-{uuid.uuid4().hex[:8]}"
        topics = [*messages.TOPICS]
        park_group_at_end(kafka, group, topics)
        return group

    return make
