"""Shared state is shared: a rate limit holds across two server processes, with Redis (production) and
with the database cache (the embedded default). Behind a trusted proxy, the login throttle counts the
client's address, not the proxy's, and a spoofed X-Forwarded-For from anyone else changes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from django.test import Client

from apps.gateway.tokens import mint_access_token
from tests.factories import UserFactory
from tests.reliability.servers import ServerProcess

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 4


@pytest.mark.postgres_only
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["redis", "database"])
def test_the_mutation_limit_holds_across_two_server_processes(
    transactional_db: None, tmp_path: Path, backend: str
) -> None:
    user = UserFactory(username="busy")
    headers = {"Authorization": f"Bearer {mint_access_token(user)}"}
    prefix = f"escrow-test-{uuid.uuid4().hex[:12]}"  # this run's keys only, on the shared Redis
    env = {
        "THROTTLE_MUTATIONS_RATE": f"{LIMIT}/min",
        "CACHE_KEY_PREFIX": prefix,
        "CACHE_URL": REDIS_URL if backend == "redis" else "",
    }
    servers = [ServerProcess("runserver", tmp_path, env=env) for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        # An invalid create: refused with 400 and no effect, but counted like any mutation.
        statuses = [
            httpx.post(f"{servers[n % 2].base}/api/v1/escrows", headers=headers, json={}, timeout=60).status_code
            for n in range(2 * LIMIT)
        ]
    finally:
        for server in servers:
            server.stop()
        if backend == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)
    # Four mutations in all, whichever process answered; then 429 from both.
    assert statuses == [400] * LIMIT + [429] * LIMIT, statuses


LOGIN = "/admin/login/"


def _attempt(client: Client, username: str, peer: str, forwarded: str | None = None) -> int:
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    return client.post(LOGIN, {"username": username, "password": "wrong-guess"}, REMOTE_ADDR=peer, **extra).status_code


@pytest.mark.django_db(transaction=True)
def test_the_login_throttle_counts_the_client_behind_a_trusted_proxy(settings) -> None:
    settings.LOGIN_RATE_LIMIT = "3/min"
    settings.TRUSTED_PROXIES = ["10.9.0.0/16"]
    client = Client()
    proxy = "10.9.0.1"

    # One client behind the proxy is limited after three guesses (different usernames: the address counts).
    assert [_attempt(client, f"guess{n}", proxy, "203.0.113.5") for n in range(4)] == [200, 200, 200, 429]
    # Another client behind the same proxy is not: the proxy's own address is not what is counted.
    assert _attempt(client, "other", proxy, "203.0.113.6") == 200
    # The address the proxy saw is the right-most one; what the client wrote before it is not believed.
    assert _attempt(client, "again", proxy, "198.51.100.1, 203.0.113.5") == 429
    # Through two trusted proxies, still the client's.
    assert _attempt(client, "twice", proxy, "203.0.113.5, 10.9.3.3") == 429

    # A peer that is not a trusted proxy is counted by its own address, whatever it claims.
    stranger = "192.0.2.7"
    spoofed = [_attempt(client, f"try{n}", stranger, f"198.51.100.{n}") for n in range(4)]
    assert spoofed == [200, 200, 200, 429]
