"""Payments tests run the real provider clients against local fake servers (tests/fakes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from apps.payments import providers
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
