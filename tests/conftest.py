"""Shared fixtures. Tests hit the real database (PostgreSQL in CI) and the real HTTP stack."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import StaffFactory, UserFactory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = (os.environ.get("DATABASE_URL") or "").startswith(("postgres://", "postgresql://"))
    required = os.environ.get("REQUIRE_POSTGRES") == "1"
    for item in items:
        if item.get_closest_marker("postgres_only") and not on_postgres:
            if required:
                item.add_marker(pytest.mark.xfail(reason="REQUIRE_POSTGRES=1 but DATABASE_URL is not PostgreSQL",
                                                  strict=True, run=False))
            else:
                item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://..."))


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
def _fresh_rate_limits() -> None:
    """Rate-limit counts live in the cache and are keyed by user id, which tests reuse: start clean."""
    from django.core.cache import cache

    cache.clear()


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
