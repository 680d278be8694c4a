"""The database goes away (a TCP proxy between the server process and PostgreSQL drops every connection
and refuses new ones) and comes back. Meanwhile the API answers 503 problem+json with Retry-After, never
500; /ready says not ready while /health stays up. Work committed during the outage by another process is
delivered by the server's own bus worker once the database is back, by itself: nothing lost, nothing
dead-lettered, and a request refused during the outage succeeds when retried with the same key."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from django.db import connection

from apps.gateway.tokens import mint_access_token
from apps.outbox.models import DeadLetter
from apps.outbox.public import lag, outbox_subscribers
from apps.projections import selectors
from tests.factories import UserFactory
from tests.reliability.servers import ServerProcess, database_url
from tests.reliability.tcp_proxy import TcpProxy
from tests.reliability.trades import PROBLEM

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(300)]

# Short waits for the test; production keeps the defaults (docs/reliability.md).
OUTAGE_ENV = {
    "DATABASE_POOL_TIMEOUT": "1",
    "DATABASE_CONNECT_TIMEOUT": "2",
    "DATABASE_POOL_RECONNECT_SECONDS": "1",
    "DATABASE_BACKOFF_MAX_SECONDS": "0.5",
    "BUS_POLL_SECONDS": "0.2",
    "DATABASE_RETRY_AFTER_SECONDS": "1",
}


def _until(condition, what: str, limit_seconds: float = 60.0):  # noqa: ANN001, ANN202
    """A bound on something that must happen by itself, not a speed expectation."""
    deadline = time.monotonic() + limit_seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_a_lost_database_answers_503_and_the_server_resumes_by_itself(
    transactional_db: None, tmp_path: Path, api_client, settings
) -> None:
    buyer = UserFactory(username="buyer")
    UserFactory(username="seller")
    headers = {"Authorization": f"Bearer {mint_access_token(buyer)}"}
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    name = "escrow-test-outage"
    server = ServerProcess(
        "serve",
        tmp_path,
        env=OUTAGE_ENV,
        database=database_url(host="127.0.0.1", port=proxy.port, application_name=name),
    )
    try:
        server.wait_ready()
        http = httpx.Client(base_url=f"{server.base}/api/v1", timeout=60)
        created = http.post(
            "/escrows",
            headers={**headers, "Idempotency-Key": "first"},
            json={"seller": "seller", "amount": "25.00", "currency": "USD", "description": "x"},
        )
        assert created.status_code == 202, created.text
        escrow_id = created.json()["escrow_id"]
        # The read model follows the 202: the read asks to wait until it has the escrow (docs/api.md).
        before = http.get(f"/escrows/{escrow_id}", headers={**headers, "Prefer": "wait=10"})
        assert before.status_code == 200 and before.json()["state"] == "AWAIT_ACCEPTANCE", (before.text, server.log())
        assert http.get("/ready").status_code == 200

        # When: the database goes away.
        proxy.cut()
        read = http.get(f"/escrows/{escrow_id}", headers=headers)
        body = {"seller": "seller", "amount": "30.00", "currency": "USD", "description": "y"}
        write = http.post("/escrows", headers={**headers, "Idempotency-Key": "during"}, json=body)
        ready = http.get("/ready")
        health = http.get("/health")

        # Then: 503 problem+json with Retry-After, never 500; not ready; still alive.
        for answer in (read, write):
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"].startswith(PROBLEM)
            assert answer.json()["code"] == "database_unavailable"
            assert answer.headers["Retry-After"] == OUTAGE_ENV["DATABASE_RETRY_AFTER_SECONDS"]
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready", ready.text
        assert health.status_code == 200
        assert proxy.refused > 0, "the server never tried the database during the outage"

        # Meanwhile another process (this one, straight to PostgreSQL) commits work that only the
        # server's bus worker will deliver: the buyer cancels.
        settings.BUS_INLINE_DISPATCH = False
        assert api_client(buyer).post(f"/api/v1/escrows/{escrow_id}/cancel", {}, format="json").status_code == 202
        assert selectors.escrow_view_get(escrow_id=escrow_id).state == "AWAIT_ACCEPTANCE"  # not delivered yet

        # When: the database is back.
        proxy.restore()

        # Then: the server's worker delivered the cancel by itself, the API and readiness are back, and
        # the write refused during the outage goes through under its key.
        _until(
            lambda: http.get(f"/escrows/{escrow_id}", headers=headers).json().get("state") == "CANCELLED",
            "the server's bus worker delivered the cancel committed during the outage",
        )
        _until(lambda: http.get("/ready").status_code == 200, "ready again")
        retried = http.post("/escrows", headers={**headers, "Idempotency-Key": "during"}, json=body)
        assert retried.status_code == 202, retried.text
        assert not DeadLetter.objects.exists()
        _until(lambda: not any(lag(sub) for sub in outbox_subscribers()), "every subscriber caught up")
        assert "bus worker: database unavailable, will retry" in server.log()
        http.close()
    finally:
        server.stop()
        proxy.close()
