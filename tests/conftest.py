"""Shared fixtures. Tests hit the real database (PostgreSQL in CI) and the real HTTP stack."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from apps.outbox import messages
from apps.outbox.kafka.admin import ensure_topics
from tests.factories import StaffFactory, UserFactory
from tests.kafka.broker import GROUP_TIMINGS, TEST_PARTITIONS, TansuBroker, park_group_at_end


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = (os.environ.get("DATABASE_URL") or "").startswith(("postgres://", "postgresql://"))
    required = os.environ.get("REQUIRE_POSTGRES") == "1"
    for item in items:
        if item.get_closest_marker("postgres_only") and not on_postgres:
            if required:
                item.add_marker(
                    pytest.mark.xfail(
                        reason="REQUIRE_POSTGRES=1 but DATABASE_URL is not PostgreSQL", strict=True, run=False
                    )
                )
            else:
                item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://..."))


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """The test process is no server: its test threads keep a connection between the requests they send
    (until they close it), so its pool is sized for them. Servers started by tests set their own."""
    from django.conf import settings

    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict):
        pool["max_size"] = max(int(pool["max_size"]), int(os.environ.get("TEST_DATABASE_POOL_MAX", "40")))


@pytest.fixture(autouse=True)
def _require_postgres_really(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres_only") and os.environ.get("REQUIRE_POSTGRES") == "1":
        if "db" in request.fixturenames or "transactional_db" in request.fixturenames:
            assert connection.vendor == "postgresql", "REQUIRE_POSTGRES=1 but the test database is not PostgreSQL"


@pytest.fixture(autouse=True)
def _media_in_tmp(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Uploaded files (dispute evidence) never land in the working tree."""
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _fresh_rate_limits(settings: Any) -> None:
    """Rate-limit counts live in the shared cache (the database's cache table here, as in the embedded
    default) and are keyed by user id, which tests reuse: each test gets a key prefix of its own, so it
    starts clean without touching the database before its own database fixture is set up."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}


@pytest.fixture
def api_client() -> Callable[..., APIClient]:
    """api_client(user) -> an APIClient that sends that user's Bearer token."""
    from apps.gateway.tokens import mint_access_token

    def make(user: object | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {mint_access_token(user)}")
        return client

    return make


@pytest.fixture
def buyer(transactional_db: None) -> object:
    return UserFactory(username="buyer")


@pytest.fixture
def seller(transactional_db: None) -> object:
    return UserFactory(username="seller")


@pytest.fixture
def stranger(transactional_db: None) -> object:
    return UserFactory(username="stranger")


@pytest.fixture
def staff(transactional_db: None) -> object:
    return StaffFactory(username="agent")


# --- the Kafka test broker (tests/kafka, tests/faults, tests/observability) ---------------------------
# KAFKA_BOOTSTRAP_SERVERS if set, else a Tansu broker on a free loopback port, started on first use and
# shared by the whole session (defined here, once: a fixture imported into several conftest modules is
# a separate session fixture in each, and started a broker each). Tansu refuses the idempotent
# producer, so these tests turn it off.


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
