"""Payments tests run the real provider clients against local fake servers (tests/fakes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from apps.payments import providers
from tests.fakes.custodian_server import USDC_TOKEN_ID, FakeCustodian
from tests.fakes.screening_server import CHAINALYSIS_KEY, TRM_KEY, FakeScreening
from tests.fakes.stripe_server import WEBHOOK_SECRET, FakeStripe


@pytest.fixture
def fake_stripe(httpserver: HTTPServer, settings: object) -> Iterator[FakeStripe]:
    """PAYMENTS_PROVIDER=live with Stripe pointed at a local fake (nothing leaves the machine)."""
    fake = FakeStripe(httpserver)
    settings.PAYMENTS_PROVIDER = "live"
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_API_BASE = fake.api_base
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_TIMEOUT_SECONDS = 2.0
    providers.reset()
    yield fake
    providers.reset()


@pytest.fixture
def local_server() -> Iterator[Callable[[], HTTPServer]]:
    """Starts extra loopback HTTP servers (one per faked vendor), stopped after the test."""
    started: list[HTTPServer] = []

    def start() -> HTTPServer:
        server = HTTPServer(host="127.0.0.1", port=0)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.clear()
        server.stop()


@pytest.fixture
def fake_screening(local_server: Callable[[], HTTPServer], settings: Any) -> FakeScreening:
    fake = FakeScreening(local_server())
    settings.TRM_API_BASE = settings.CHAINALYSIS_API_BASE = fake.api_base
    settings.TRM_API_KEY, settings.CHAINALYSIS_API_KEY = TRM_KEY, CHAINALYSIS_KEY
    return fake


@pytest.fixture
def fake_custodian(
    local_server: Callable[[], HTTPServer], fake_screening: FakeScreening, settings: Any
) -> Iterator[FakeCustodian]:
    """PAYMENTS_PROVIDER=live with the custodian and both screening vendors faked on loopback."""
    from apps.payments.providers import custodian

    fake = FakeCustodian(local_server())
    settings.PAYMENTS_PROVIDER = "live"
    settings.CUSTODIAN_API_BASE = fake.api_base
    settings.CUSTODIAN_API_KEY = fake.api_key
    settings.CUSTODIAN_WEBHOOK_SECRET = ""  # the key is fetched by its id, as from the real custodian
    settings.CUSTODIAN_USDC_TOKEN_ID = USDC_TOKEN_ID
    settings.CUSTODIAN_ENTITY_SECRET = ""  # tests that want it set it with fake.entity_secret
    providers.reset()
    custodian._public_keys.clear()
    custodian._entity_keys.clear()
    yield fake
    providers.reset()
    custodian._public_keys.clear()
    custodian._entity_keys.clear()
