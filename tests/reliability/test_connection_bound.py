"""Connections stay bounded whatever the server: thirty clients driving whole trades at once against a
real server process never hold more of PostgreSQL's connections than that process's pool allows (plus
the bus worker's LISTEN connection where one runs), and nothing answers 500. When the pool has no free
connection in time, the answer is 503 problem+json with Retry-After, and the retry succeeds."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from apps.escrow.models import Escrow
from apps.gateway.tokens import mint_access_token
from apps.outbox.worker import BusWorker
from tests.factories import UserFactory
from tests.reliability.servers import ServerProcess, connections_of, database_url
from tests.reliability.trades import PROBLEM, TradeClient

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(600)]

CLIENTS = 30
POOL_MAX = 4
# The bus worker that `serve` runs holds one LISTEN connection outside the pool.
LISTENERS = {"serve": 1, "runserver": 0, "gunicorn": 0}


@pytest.mark.parametrize("kind", ["serve", "runserver", "gunicorn"])
def test_thirty_concurrent_clients_stay_within_the_pool(transactional_db: None, tmp_path: Path, kind: str) -> None:
    pairs = []
    for n in range(CLIENTS):
        buyer, seller = UserFactory(username=f"b{n}"), UserFactory(username=f"s{n}")
        pairs.append(((buyer.username, mint_access_token(buyer)), (seller.username, mint_access_token(seller))))
    answers: Counter[int] = Counter()
    faults: list[str] = []
    peak = 0
    sampling = threading.Event()
    # The processes without a bus worker of their own (runserver, gunicorn) rely on one beside them,
    # as in production; it runs here, on this process's connections.
    worker = BusWorker(poll_seconds=0.2)
    worker_thread = threading.Thread(target=worker.run_forever, daemon=True)
    worker_thread.start()
    server = ServerProcess(kind, tmp_path, env={"DATABASE_POOL_MAX": str(POOL_MAX), "DATABASE_POOL_TIMEOUT": "30"})
    try:
        server.wait_ready()

        def sample() -> None:
            nonlocal peak
            while not sampling.is_set():
                peak = max(peak, connections_of(server.application_name))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def one_trade(pair: tuple[tuple[str, str], tuple[str, str]]) -> str:
            client = TradeClient(server.base, answers, faults)
            try:
                return client.trade(*pair)
            finally:
                client.close()

        with ThreadPoolExecutor(CLIENTS) as pool:
            escrow_ids = list(pool.map(one_trade, pairs))
        sampling.set()
        sampler.join(10)
    finally:
        server.stop()
        worker.stop()
        worker_thread.join(30)

    assert not faults, faults[:5]
    assert 500 not in answers, answers
    assert Escrow.objects.filter(pk__in=escrow_ids, state="RELEASED").count() == CLIENTS
    # The sampler saw the server's connections (not a vacuous bound) and never more than the pool's.
    assert 1 <= peak <= POOL_MAX + LISTENERS[kind], (peak, answers)


def test_an_exhausted_pool_answers_503_with_retry_after_then_recovers(transactional_db: None, tmp_path: Path) -> None:
    buyer = UserFactory(username="buyer")
    UserFactory(username="seller")
    token = mint_access_token(buyer)
    headers = {"Authorization": f"Bearer {token}"}
    with ServerProcess(
        "runserver", tmp_path, env={"DATABASE_POOL_MAX": "1", "DATABASE_POOL_MIN": "1", "DATABASE_POOL_TIMEOUT": "0.5"}
    ) as server:
        http = httpx.Client(base_url=f"{server.base}/api/v1", timeout=60)
        created = http.post(
            "/escrows",
            headers={**headers, "Idempotency-Key": "create-1"},
            json={"seller": "seller", "amount": "25.00", "currency": "USD", "description": "x"},
        )
        assert created.status_code == 202, created.text
        escrow_id = created.json()["escrow_id"]
        answers: list[httpx.Response] = []
        # Given: the server's only connection is busy inside a command that waits for a lock held here.
        with psycopg.connect(database_url()) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"stream:{escrow_id}"])
            cancel = threading.Thread(
                target=lambda: answers.append(
                    http.post(
                        f"/escrows/{escrow_id}/cancel", headers={**headers, "Idempotency-Key": "cancel-1"}, json={}
                    )
                )
            )
            cancel.start()
            _wait_until_blocked_by(holder, server.application_name)
            # When: another request needs a connection.
            busy = httpx.get(f"{server.base}/api/v1/escrows/{escrow_id}", headers=headers, timeout=60)
            ready = httpx.get(f"{server.base}/api/v1/ready", timeout=60)
            holder.rollback()
        cancel.join(60)
        # Then: 503 problem+json with Retry-After, never 500; readiness says not ready.
        assert busy.status_code == 503, busy.text
        assert busy.headers["content-type"].startswith(PROBLEM)
        assert busy.json()["code"] == "database_unavailable"
        assert int(busy.headers["Retry-After"]) >= 1
        assert ready.status_code == 503, ready.text
        # And once the connection is free again, the command went through and the retry answers.
        assert [a.status_code for a in answers] == [202], [a.text for a in answers]
        again = httpx.get(f"{server.base}/api/v1/escrows/{escrow_id}", headers=headers, timeout=60)
        assert again.status_code == 200 and again.json()["state"] == "CANCELLED", again.text
        http.close()


def _wait_until_blocked_by(holder: psycopg.Connection, application_name: str, limit_seconds: float = 30) -> None:
    deadline = time.monotonic() + limit_seconds
    with psycopg.connect(database_url(), autocommit=True) as probe:
        pid = holder.info.backend_pid
        while not probe.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND %s = ANY(pg_blocking_pids(pid))",
            [application_name, pid],
        ).fetchone():
            assert time.monotonic() < deadline, "the command never waited for the held lock"
            time.sleep(0.01)
