"""CPU and wall time per `GET /api/v1/escrows/{id}` in one process, against the minimal view (/bench/noop)
through the same Django handler and middleware: a figure that a busy shared machine disturbs far less than
closed-loop throughput (CPU time is this thread's own, whatever else runs).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/escrow_read_cpu CACHE_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/read_path_cpu.py --requests 3000

It drops and creates the database named in DATABASE_URL (PostgreSQL), migrates it, makes one funded escrow
(and one awaiting funds, whose buyer's answer adds the payment instructions) through the API, then times
GETs of each, alternating rounds of the escrow read and the minimal view. No HTTP server, no sockets: what
it measures is the request's own work in Django plus its round trips to PostgreSQL and the cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("BUS_INLINE_DISPATCH", "1")


def _fresh_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="GETs per path, in rounds; default 3000")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds; default 10")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("set DATABASE_URL=postgres://... (the database is dropped and created)")
    _fresh_database(url)

    import logging

    import django

    django.setup()
    logging.getLogger("apps.gateway.access").setLevel(logging.WARNING)  # both paths log the same; not timed here
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from apps.gateway.tokens import mint_access_token

    users = get_user_model().objects
    buyer = users.create_user(username="cpu_buyer")
    seller = users.create_user(username="cpu_seller")
    as_buyer = {"HTTP_AUTHORIZATION": f"Bearer {mint_access_token(buyer)}"}
    as_seller = {"HTTP_AUTHORIZATION": f"Bearer {mint_access_token(seller)}"}
    client = Client()

    def create() -> str:
        body = {"counterparty": "cpu_seller", "amount": "149.99", "currency": "USD", "description": "bench"}
        made = client.post("/api/v1/escrows", body, content_type="application/json", **as_buyer)
        escrow_id = made.json()["escrow_id"]
        client.get(f"/api/v1/escrows/{escrow_id}", HTTP_PREFER="wait=5", **as_seller)
        accepted = client.post(f"/api/v1/escrows/{escrow_id}/accept", {}, content_type="application/json", **as_seller)
        assert accepted.status_code == 202, accepted.content
        return str(escrow_id)

    funded, awaiting = create(), create()
    paid = client.post(
        f"/api/v1/sandbox/escrows/{funded}/pay", {}, content_type="application/json", HTTP_PREFER="wait=5", **as_buyer
    )
    assert paid.status_code == 202, paid.content
    for escrow_id, state in ((funded, "FUNDS_HELD"), (awaiting, "AWAIT_FUNDS")):
        for _ in range(200):
            answer = client.get(f"/api/v1/escrows/{escrow_id}", **as_buyer)
            if answer.status_code == 200 and answer.json()["state"] == state:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"{escrow_id} never reached {state}")

    paths = {
        "minimal view": ("/bench/noop", {}),
        "GET escrow (funded)": (f"/api/v1/escrows/{funded}", as_buyer),
        "GET escrow (buyer, awaiting funds)": (f"/api/v1/escrows/{awaiting}", as_buyer),
    }
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    wall: dict[str, list[float]] = {name: [] for name in paths}
    per_round = max(args.requests // args.rounds, 1)
    for path, headers in paths.values():  # warm-up
        for _ in range(50):
            assert client.get(path, **headers).status_code == 200
    for _ in range(args.rounds):
        for name, (path, headers) in paths.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(per_round):
                client.get(path, **headers)
            cpu[name].append((time.thread_time() - c0) / per_round * 1e6)
            wall[name].append((time.perf_counter() - w0) / per_round * 1e6)
    base = statistics.median(cpu["minimal view"])
    print(f"load average at the end: {os.getloadavg()}")
    print("| path | CPU µs per request (median of rounds) | wall µs per request | minimal view's CPU / this |")
    print("|---|---|---|---|")
    for name in paths:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"| {name} | {c:.0f} | {w:.0f} | {base / c:.2f} |")


if __name__ == "__main__":
    main()
