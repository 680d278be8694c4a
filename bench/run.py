"""The benchmark: a production-shaped stack on this machine, open-model load, ceilings from the same run.

    make bench                                  # defaults: about 3 minutes
    .venv/bin/python bench/run.py --commands-per-s 80 --queries-per-s 200 --duration 60

Steps (progress lines on stderr, summary on stdout, results in bench/results/<timestamp>.{md,json}):
1. PostgreSQL database `escrow_bench`, dropped and created fresh, migrated; buyer/seller pairs and tokens.
2. gunicorn (gthread workers) on a free loopback port with DJANGO_SETTINGS_MODULE=bench.settings (the
   project plus /bench/noop), and `manage.py run_bus` beside it, both with BUS_INLINE_DISPATCH=0 unless
   --inline (see docs/performance.md for why).
3. Framework ceiling: closed-loop GETs of /bench/noop; read-path maximum: closed-loop GETs of an escrow.
4. Open-model load: commands (create / accept / sandbox pay / deliver / release, each trade stepping through its
   lifecycle) and queries (GET /escrows/{id}) sent at a constant arrival rate by a clock. Latency is
   measured from each request's SCHEDULED time, so a stall delays every request behind it in the
   figures (no coordinated omission).
5. Command-to-event and webhook-to-event: every request carries its own X-Correlation-ID, which the
   outbox rows it causes carry too; the event's "applied by projections" time is read from the tables.
   With --webhooks-per-s R the stack runs the card rail (PAYMENTS_PROVIDER=live, Stripe faked on loopback
   by bench/stripe_fake.py); R x duration escrows are prepared in AWAIT_FUNDS beforehand (the escrow
   commands dispatched here, the bus drained here: Stripe PaymentIntents created by the payments app), and
   a signed `payment_intent.succeeded` is posted for each at R/s, as Stripe posts it; webhook-to-event
   is its scheduled send -> projections applied the escrow's EscrowFundsHeld.
6. Database ceiling: pgbench running the statements one command runs, against copies of the tables.
7. Relay: bench/relay_bench.py if --relay (it starts a Tansu broker when Kafka is not configured).
Everything started is stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))  # run as a script: bench.settings and the apps import from the project root
from apps.outbox.progress import CommandProgress  # noqa: E402 - after the path is set

PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"

# The event each command's effect is judged by: when projections applied it, the reader can see it.
EVENT_OF = {
    "create": "escrow.v1.EscrowCreated",
    "accept": "escrow.v1.EscrowAccepted",
    "pay": "escrow.v1.EscrowFundsHeld",
    "deliver": "escrow.v1.EscrowDelivered",
    "release": "escrow.v1.EscrowReleaseRequested",
}
# A trade as the product runs it: the buyer proposes, the seller accepts, the buyer pays, the seller
# delivers, the buyer releases.
NEXT_STEP = {"create": "accept", "accept": "pay", "pay": "deliver", "deliver": "release", "release": None}


# The phases as they pass (apps/outbox/progress.py: a spinner on a terminal, plain lines otherwise).
REPORTER = CommandProgress(sys.stderr, "bench phases")


def progress(message: str) -> None:
    REPORTER.line(f"[bench {time.strftime('%H:%M:%S')}] {message}")
    REPORTER.advance()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(1, math.ceil(q * len(ordered))) - 1] * 1000, 1)

    return {
        "n": len(ordered),
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
    }


# --- the stack ------------------------------------------------------------------------------------


class Stack:
    """The processes this run started; `stop()` ends exactly those (by pid)."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = Path(tempfile.mkdtemp(prefix="escrow-bench-"))

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    progress(f"{name} did not stop on SIGTERM; killing pid {proc.pid}")
                    proc.kill()
                    proc.wait()

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def memory(stack: Stack) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    gunicorn = stack.procs.get("gunicorn")
    if gunicorn is not None:
        figures["gunicorn master"] = rss_mb(gunicorn.pid)
        for n, pid in enumerate(children(gunicorn.pid), 1):
            figures[f"gunicorn worker {n}"] = rss_mb(pid)
    for name, proc in stack.procs.items():
        if name.startswith("run_bus"):
            figures[name.replace("run_bus", "bus worker")] = rss_mb(proc.pid)
    figures["load generator"] = rss_mb(os.getpid())
    return figures


def reset_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def bench_cache_url() -> str:
    """The shared cache, as production has it: Redis on 127.0.0.1:6379 when one answers (authentication reads
    token revocations from it on every request), else the database's cache table. CACHE_URL overrides."""
    if os.environ.get("CACHE_URL"):
        return os.environ["CACHE_URL"]
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            if conn.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/0"
    except OSError:
        pass
    return "db://"


CACHE_KEY_PREFIX = f"escrow-bench-{os.getpid()}"


# The card rail of the webhook load: the stack's Stripe client talks to bench/stripe_fake.py, and the
# webhooks are signed with this secret (the stack is configured with it, as with Stripe's endpoint secret).
STRIPE_WEBHOOK_SECRET = "whsec_bench_0123456789abcdef0123456789abcdef"


def django_env(database_url: str, *, inline: bool, stripe_api_base: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "CACHE_URL": bench_cache_url(),
            "CACHE_KEY_PREFIX": CACHE_KEY_PREFIX,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BUS_INLINE_DISPATCH": "1" if inline else "0",
            "LOG_LEVEL": "WARNING",
            "DEBUG": "0",
            "PAYMENTS_PROVIDER": "sandbox",
            # The bench's users are few and busy; the limit protects production from abuse, not from us.
            "THROTTLE_MUTATIONS_RATE": "off",
            "DB_CONN_MAX_AGE": os.environ.get("DB_CONN_MAX_AGE", "600"),
            "PYTHONPATH": str(ROOT),
        }
    )
    if stripe_api_base:
        env.update(
            {
                "PAYMENTS_PROVIDER": "live",
                "STRIPE_SECRET_KEY": "sk_test_bench",
                "STRIPE_API_BASE": stripe_api_base,
                "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
            }
        )
    return env


def prepare(database_url: str, pairs: int, *, stripe_api_base: str = "") -> list[tuple[str, str]]:
    """Migrates and returns (buyer token, seller username/token) pairs, via this process's Django."""
    os.environ.update(django_env(database_url, inline=False, stripe_api_base=stripe_api_base))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from apps.gateway.tokens import mint_access_token

    call_command("migrate", verbosity=0)  # also makes the database cache's table (gateway 0008)
    users = get_user_model()
    tokens: list[tuple[str, str]] = []
    for n in range(pairs):
        buyer = users.objects.create_user(username=f"bench-buyer-{n}", password=None)
        seller = users.objects.create_user(username=f"bench-seller-{n}", password=None)
        tokens.append((mint_access_token(buyer, expires_in=3600), mint_access_token(seller, expires_in=3600)))
    return tokens


@dataclass
class CardEscrow:
    """An escrow awaiting funds on the card rail, and its PaymentIntent as Stripe holds it once paid."""

    escrow_id: str
    pair: int
    intent: dict[str, Any]


def prepare_card_escrows(count: int, pairs: int, stripe_api_base: str) -> list[CardEscrow]:
    """`count` escrows in AWAIT_FUNDS on the card rail, made as the product makes them: the buyer's
    CreateEscrow and the seller's AcceptEscrow through escrow's dispatch, then the bus drained here (the
    payments app creates each PaymentIntent on the fake Stripe, projections and notifications apply). Then
    each buyer pays on the fake Stripe, which returns the PaymentIntents the webhooks will carry."""
    import uuid

    from django.contrib.auth import get_user_model

    from apps.escrow import public as escrow
    from apps.outbox.drain import drain
    from apps.payments.models import PaymentArtifact
    from proto.common.v1 import Money

    users = dict(get_user_model().objects.filter(username__startswith="bench-").values_list("username", "pk"))
    started = time.monotonic()
    made: list[tuple[str, int]] = []
    batch = 200
    for n in range(count):
        pair = n % pairs
        buyer, seller = users[f"bench-buyer-{pair}"], users[f"bench-seller-{pair}"]
        escrow_id = str(uuid.uuid4())
        escrow.dispatch(
            escrow.CreateEscrow(
                escrow_id=escrow_id,
                buyer_id=buyer,
                seller_id=seller,
                amount=Money(amount_minor=14999, currency="USD"),
                description="bench card trade",
                actor=escrow.Actor(kind=escrow.ActorKind.USER, user_id=buyer),
            ),
            command_id=uuid.uuid4(),
        )
        escrow.dispatch(
            escrow.AcceptEscrow(escrow_id=escrow_id, actor=escrow.Actor(kind=escrow.ActorKind.USER, user_id=seller)),
            command_id=uuid.uuid4(),
        )
        made.append((escrow_id, pair))
        if (n + 1) % batch == 0 or n + 1 == count:
            drain()
            if (n + 1) % (batch * 10) == 0 or n + 1 == count:
                progress(f"  {n + 1} of {count} card escrows awaiting funds ({time.monotonic() - started:.0f}s)")
    intents = dict(
        PaymentArtifact.objects.filter(
            provider="stripe", kind=PaymentArtifact.Kind.PAYMENT, escrow_id__in=[e for e, _ in made]
        ).values_list("escrow_id", "provider_id")
    )
    missing = [e for e, _ in made if uuid.UUID(e) not in intents and e not in intents]
    if missing:
        raise SystemExit(f"{len(missing)} of {count} escrows have no Stripe PaymentIntent (first: {missing[0]})")
    by_escrow = {str(k): v for k, v in intents.items()}
    paid: dict[str, dict[str, Any]] = {}
    ids = list(by_escrow.values())
    for chunk in range(0, len(ids), 1000):
        answer = httpx.post(f"{stripe_api_base}/bench/paid", json=ids[chunk : chunk + 1000], timeout=60)
        answer.raise_for_status()
        paid.update({intent["id"]: intent for intent in answer.json()})
    progress(
        f"  {count} card escrows prepared in {time.monotonic() - started:.0f}s; their buyers paid on the fake Stripe"
    )
    return [CardEscrow(escrow_id, pair, paid[by_escrow[escrow_id]]) for escrow_id, pair in made]


def wait_for_port(port: int, stack: Stack, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.procs[name].poll() is not None:
            raise SystemExit(f"{name} exited with {stack.procs[name].returncode}:\n{stack.tail(name)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not listen on {port} within {timeout}s:\n{stack.tail(name)}")


def wait_until_up(base: str, stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{stack.tail(name)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/bench/noop", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within {timeout}s:\n{stack.tail('gunicorn')}")


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Trade:
    buyer: int  # index into the token pairs
    escrow_id: str = ""
    step: str = "create"
    not_before: float = 0.0


@dataclass
class Record:
    kind: str
    correlation_id: str
    scheduled: float  # wall clock (time.time), comparable with the server's timestamps
    status: int = 0
    latency: float = 0.0
    body: Any = None


@dataclass
class Load:
    records: list[Record] = field(default_factory=list)
    early: Counter[str] = field(default_factory=Counter)  # a step sent before the bus caught up
    errors: Counter[str] = field(default_factory=Counter)
    trades_finished: int = 0
    escrows: list[tuple[str, int]] = field(default_factory=list)  # (escrow id, pair index) to read
    # On the card rail (--webhooks-per-s) a trade's sandbox "pay" step does not exist: trades end at accept.
    card_rail: bool = False
    webhook_outcomes: Counter[str] = field(default_factory=Counter)  # the webhook answers' "status"
    webhooks_sent: int = 0  # scheduled and started, answered or not
    webhook_first_sends: dict[str, float] = field(default_factory=dict)  # escrow id -> first delivery's schedule


_corr = itertools.count()


# The load generator shares the machine's two cores with the stack it measures, so it must be cheap per
# request: aiohttp (C parser) costs a fraction of httpx's CPU. At 70 commands/s the httpx client alone
# used ~70 % of a core and capped what the bench could offer.
CLIENT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def client_session(base: str, connections: int, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=base,
        headers=headers,
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def _send(
    client: aiohttp.ClientSession,
    load: Load,
    kind: str,
    method: str,
    url: str,
    token: str,
    scheduled_mono: float,
    scheduled_wall: float,
    body: dict[str, Any] | None = None,
) -> Record:
    record = Record(kind=kind, correlation_id=f"bench-{kind}-{next(_corr)}", scheduled=scheduled_wall)
    headers = {"Authorization": f"Bearer {token}", "X-Correlation-ID": record.correlation_id}
    if method == "POST":
        # As a careful client sends every command: a new key per attempt (a retried step is a new
        # attempt here, since its first answer was a refusal that the key would replay).
        headers["Idempotency-Key"] = record.correlation_id
    await _exchange(client, load, record, scheduled_mono, method, url, json=body, headers=headers)
    return record


async def _exchange(
    client: aiohttp.ClientSession,
    load: Load,
    record: Record,
    scheduled_mono: float,
    method: str,
    url: str,
    **request: Any,
) -> None:
    """Sends one request and fills in `record` (its status, its latency from the scheduled send, a JSON
    body), then keeps it. A request with no answer is status -1, counted in the errors under its exception."""
    try:
        async with client.request(method, url, **request) as response:
            payload = await response.read()
        record.status = response.status
        record.latency = time.monotonic() - scheduled_mono
        if response.headers.get("content-type", "").endswith("json"):
            record.body = json.loads(payload)
    except CLIENT_ERRORS as exc:
        record.status = -1
        record.latency = time.monotonic() - scheduled_mono
        load.errors[f"{record.kind}: {type(exc).__name__}"] += 1
    load.records.append(record)


async def command_step(
    client: aiohttp.ClientSession,
    load: Load,
    ready: deque[Trade],
    tokens: list[tuple[str, str]],
    trade: Trade,
    scheduled_mono: float,
    scheduled_wall: float,
) -> None:
    buyer_token, seller_token = tokens[trade.buyer]
    if trade.step == "create":
        record = await _send(
            client,
            load,
            "create",
            "POST",
            "/api/v1/escrows",
            buyer_token,
            scheduled_mono,
            scheduled_wall,
            {
                "seller": f"bench-seller-{trade.buyer}",
                "amount": "149.99",
                "currency": "USD",
                "description": "bench trade",
            },
        )
    elif trade.step == "pay":
        record = await _send(
            client,
            load,
            "pay",
            "POST",
            f"/api/v1/sandbox/escrows/{trade.escrow_id}/pay",
            buyer_token,
            scheduled_mono,
            scheduled_wall,
        )
    else:
        token = seller_token if trade.step in ("accept", "deliver") else buyer_token
        record = await _send(
            client,
            load,
            trade.step,
            "POST",
            f"/api/v1/escrows/{trade.escrow_id}/{trade.step}",
            token,
            scheduled_mono,
            scheduled_wall,
        )
    if record.status == 202:
        if trade.step == "create":
            trade.escrow_id = record.body["escrow_id"]
            load.escrows.append((trade.escrow_id, trade.buyer))
        following = None if load.card_rail and trade.step == "accept" else NEXT_STEP[trade.step]
        if following is None:
            load.trades_finished += 1
            return
        trade.step = following
    elif record.status in (404, 409) and trade.step != "create":
        # The previous step's event has not reached the read model / the escrow yet (the bus is
        # asynchronous): a client would retry, and so do we. Counted, not an error.
        load.early[trade.step] += 1
    else:
        if record.status != -1:  # a request with no answer was counted by its exception already
            load.errors[f"{record.kind}: HTTP {record.status}"] += 1
        return
    trade.not_before = time.monotonic() + 0.05
    ready.append(trade)


# What Stripe's webhook POSTs carry besides the body and its signature.
STRIPE_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
}


async def webhook_send(
    client: aiohttp.ClientSession,
    load: Load,
    card: CardEscrow,
    kind: str,
    scheduled_mono: float,
    scheduled_wall: float,
) -> None:
    """One `payment_intent.succeeded` about `card`'s PaymentIntent, signed at send time with Stripe's
    scheme (tests/fakes/stripe_server.py's signed_event: the stripe library's t=...,v1=HMAC-SHA256). A
    duplicate delivery carries the same event id, signed anew, as Stripe's redeliveries do. The record's
    correlation id is the escrow id: Stripe sends no X-Correlation-ID."""
    from tests.fakes.stripe_server import signed_event

    body, headers = signed_event(
        "payment_intent.succeeded", card.intent, secret=STRIPE_WEBHOOK_SECRET, event_id=f"evt_bench_{card.escrow_id}"
    )
    record = Record(kind=kind, correlation_id=card.escrow_id, scheduled=scheduled_wall)
    await _exchange(
        client,
        load,
        record,
        scheduled_mono,
        "POST",
        "/api/v1/webhooks/stripe",
        data=body,
        headers={**STRIPE_HEADERS, **headers},
    )
    if record.body is not None:
        load.webhook_outcomes[f"{kind}: {record.body.get('status')}"] += 1
    if record.status != -1 and not 200 <= record.status < 300:
        load.errors[f"{kind}: HTTP {record.status}"] += 1


async def open_model(
    base: str,
    tokens: list[tuple[str, str]],
    *,
    commands_per_s: float,
    queries_per_s: float,
    duration: float,
    max_in_flight: int,
    webhooks_per_s: float = 0,
    cards: list[CardEscrow] | None = None,
    duplicates: float = 0,
) -> tuple[Load, float]:
    load = Load(card_rail=cards is not None)
    cards = cards or []
    ready: deque[Trade] = deque()
    async with client_session(base, max_in_flight) as client:
        tasks: set[asyncio.Task[Any]] = set()
        start = time.monotonic() + 0.2
        wall_offset = time.time() - time.monotonic()

        def schedule(rate: float) -> Iterator[float]:
            if rate <= 0:
                return iter(())
            return (start + i / rate for i in range(int(duration * rate)))

        # One clock for all streams: merge their schedules. A webhook is ("webhook", n): the n-th prepared
        # escrow's; a share `duplicates` of them is delivered again 0 to 2 s later (Stripe delivers at least
        # once: a redelivery may overlap the first delivery's processing).
        webhook_times = list(schedule(webhooks_per_s))[: len(cards)]
        chooser = random.Random(17)
        events: list[tuple[float, str, int]] = sorted(
            [(t, "command", 0) for t in schedule(commands_per_s)]
            + [(t, "query", 0) for t in schedule(queries_per_s)]
            + [(t, "webhook", n) for n, t in enumerate(webhook_times)]
            + [
                (t + chooser.uniform(0, 2), "webhook duplicate", n)
                for n, t in enumerate(webhook_times)
                if chooser.random() < duplicates
            ]
        )
        last_report = start
        next_pair = itertools.count()
        for at, kind, n in events:
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            wall = at + wall_offset
            if kind.startswith("webhook"):
                load.webhooks_sent += 1
                if kind == "webhook":
                    load.webhook_first_sends[cards[n].escrow_id] = wall
                task = asyncio.create_task(webhook_send(client, load, cards[n], kind, at, wall))
            elif kind == "command":
                trade = ready.popleft() if ready and ready[0].not_before <= time.monotonic() else None
                if trade is None:
                    trade = Trade(buyer=next(next_pair) % len(tokens))
                task = asyncio.create_task(command_step(client, load, ready, tokens, trade, at, wall))
            else:
                if not load.escrows:
                    continue
                escrow_id, pair = random.choice(load.escrows)
                task = asyncio.create_task(
                    _send(client, load, "query", "GET", f"/api/v1/escrows/{escrow_id}", tokens[pair][0], at, wall)
                )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                done = Counter(r.kind for r in load.records)
                progress(
                    f"load t={last_report - start:.0f}s sent {dict(done)} in flight {len(tasks)} "
                    f"finished trades {load.trades_finished} errors {sum(load.errors.values())}"
                )
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        elapsed = time.monotonic() - start
        if tasks and load.webhooks_sent:
            # Still unanswered 60 s after the clock stopped: an error each (the webhook figures count them).
            progress(f"{len(tasks)} requests still unanswered 60 s after the load; given up")
    return load, elapsed


async def closed_loop(base: str, path: str, token: str | None, *, seconds: float, concurrency: int) -> dict[str, Any]:
    """As many requests as `concurrency` clients can send back to back: a throughput ceiling."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client_session(base, concurrency, headers) as client:
        deadline = time.monotonic() + seconds

        async def one_client() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    async with client.get(path) as response:
                        await response.read()
                        ok = response.status == 200
                except CLIENT_ERRORS:
                    ok = False
                if ok:
                    latencies.append(time.monotonic() - sent)
                else:
                    errors += 1

        started = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"requests_per_s": round(len(latencies) / elapsed, 1), "errors": errors, **percentiles(latencies)}


# --- results from the tables ------------------------------------------------------------------------


def event_latencies(load: Load) -> dict[str, Any]:
    """Scheduled send -> projections applied, and occurred_at -> applied, per command kind."""
    from django.db import connection

    sent = {r.correlation_id: r for r in load.records if r.kind in EVENT_OF and r.status == 202}
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT o.correlation_id, o.type, o.occurred_at, p.processed_at
               FROM outbox_outboxmessage o
               JOIN outbox_processedmessage p ON p.event_id = o.event_id AND p.subscriber = 'projections'
               WHERE o.correlation_id LIKE 'bench-%%' AND o.type = ANY(%s)""",
            [list(EVENT_OF.values())],
        )
        rows = cursor.fetchall()
    end_to_end: dict[str, list[float]] = {kind: [] for kind in EVENT_OF}
    server_side: dict[str, list[float]] = {kind: [] for kind in EVENT_OF}
    for correlation_id, type_name, occurred_at, processed_at in rows:
        record = sent.get(correlation_id)
        if record is None or EVENT_OF[record.kind] != type_name:
            continue
        end_to_end[record.kind].append(processed_at.timestamp() - record.scheduled)
        server_side[record.kind].append((processed_at - occurred_at).total_seconds())
    commands = [k for k in EVENT_OF if k != "pay"]
    return {
        "command_to_event": percentiles([v for k in commands for v in end_to_end[k]]),
        "command_to_event_server": percentiles([v for k in commands for v in server_side[k]]),
        "webhook_to_event": percentiles(end_to_end["pay"]),
        "webhook_to_event_server": percentiles(server_side["pay"]),
        "per_command": {k: percentiles(v) for k, v in end_to_end.items()},
        "accepted_without_event": sum(1 for r in sent.values() if r.correlation_id not in {row[0] for row in rows}),
    }


def webhook_latencies(load: Load, elapsed: float) -> dict[str, Any]:
    """Per escrow whose webhook was posted: scheduled send of its first delivery -> projections applied its
    EscrowFundsHeld (end to end), and the server's share of it, from the first delivery's stored row
    (received_at) to that applied time, with EscrowFundsHeld's occurred_at in between (the webhook and the
    escrow's reaction on the bus, then projections). Also how many EscrowFundsHeld each escrow got: a
    duplicate delivery must add none."""
    from django.db import connection

    firsts = load.webhook_first_sends  # the schedule, answered or not: an unanswered one still counts
    deliveries = [r for r in load.records if r.kind.startswith("webhook")]
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT o.aggregate_id, o.occurred_at, p.processed_at,
                      (SELECT count(*) FROM outbox_outboxmessage d
                        WHERE d.aggregate_id = o.aggregate_id AND d.type = o.type)
               FROM outbox_outboxmessage o
               LEFT JOIN outbox_processedmessage p ON p.event_id = o.event_id AND p.subscriber = 'projections'
               WHERE o.type = 'escrow.v1.EscrowFundsHeld' AND o.aggregate_id = ANY(%s)""",
            [list(firsts)],
        )
        rows = cursor.fetchall()
        cursor.execute(
            """SELECT provider_event_id, min(received_at) FROM payments_webhookevent
               WHERE provider = 'stripe' AND provider_event_id = ANY(%s) GROUP BY provider_event_id""",
            [[f"evt_bench_{escrow_id}" for escrow_id in firsts]],
        )
        received = {event_id.removeprefix("evt_bench_"): at for event_id, at in cursor.fetchall()}
    end_to_end, server, to_occurred, to_applied = [], [], [], []
    held: dict[str, int] = {}
    for aggregate_id, occurred_at, processed_at, count in rows:
        held[str(aggregate_id)] = int(count)
        scheduled = firsts.get(str(aggregate_id))
        if scheduled is None or processed_at is None:
            continue
        end_to_end.append(processed_at.timestamp() - scheduled)
        to_applied.append((processed_at - occurred_at).total_seconds())
        if str(aggregate_id) in received:
            server.append((processed_at - received[str(aggregate_id)]).total_seconds())
            to_occurred.append((occurred_at - received[str(aggregate_id)]).total_seconds())
    # Throughput while the clock was sending: funds held between the first and the last scheduled send.
    first, last = (min(firsts.values()), max(firsts.values())) if firsts else (0.0, 0.0)
    in_window = sum(1 for _, occurred_at, _, _ in rows if first <= occurred_at.timestamp() <= last)
    ok = [r for r in deliveries if 200 <= r.status < 300]
    errors = {k: v for k, v in load.errors.items() if k.startswith("webhook")}
    if load.webhooks_sent > len(deliveries):
        errors["webhook: no answer 60 s after the load ended"] = load.webhooks_sent - len(deliveries)
    return {
        "sent": load.webhooks_sent,
        "first_deliveries": len(firsts),
        "duplicates_sent": load.webhooks_sent - len(firsts),
        "accepted_per_s": round(len(ok) / elapsed, 1) if elapsed else None,
        "funds_held_per_s_while_sending": round(in_window / (last - first), 1) if last > first else None,
        "http_latency": percentiles([r.latency for r in ok]),
        "webhook_to_event": percentiles(end_to_end),
        "webhook_to_event_server": percentiles(server),
        "received_to_funds_held": percentiles(to_occurred),
        "funds_held_to_applied": percentiles(to_applied),
        "answers": dict(load.webhook_outcomes),
        "errors": errors,
        "escrows_without_funds_held": len(firsts) - len(held),
        "escrows_with_more_than_one_funds_held": sum(1 for n in held.values() if n > 1),
    }


def metrics_check(base: str, *, sent: int) -> dict[str, Any]:
    """Scrapes /api/v1/metrics from the running gunicorn: the HTTP requests it counted across all
    workers (merged through PROMETHEUS_MULTIPROC_DIR) should match what the load generator sent."""
    from prometheus_client.parser import text_string_to_metric_families

    token = os.environ.get("METRICS_TOKEN", "")
    try:
        response = httpx.get(
            f"{base}/api/v1/metrics", timeout=30, headers={"Authorization": f"Bearer {token}"} if token else {}
        )
    except httpx.HTTPError as exc:
        # An overloaded stack (a backlog still queued when the load ended) may not answer in time.
        return {"error": f"{type(exc).__name__}: no answer within 30 s", "client_sent": sent}
    counted = 0.0
    command_to_event: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if (
                sample.name == "escrow_http_requests_total"
                and sample.labels.get("route", "").startswith("api/v1/")
                and sample.labels["route"] != "api/v1/metrics"
            ):
                counted += sample.value
            if sample.name == "escrow_command_to_event_seconds" and sample.labels.get("quantile") == "0.95":
                command_to_event[sample.labels["subscriber"]] = round(sample.value * 1000, 1)
    return {
        "status": response.status_code,
        "escrow_requests_counted": int(counted),
        "client_sent": sent,
        "command_to_event_p95_ms_by_subscriber": command_to_event,
    }


def database_transactions(database: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [database])
        return int(cursor.fetchone()[0])


def wait_for_bus(timeout: float) -> dict[str, int]:
    from apps.outbox.public import lag, outbox_subscribers

    deadline = time.monotonic() + timeout
    while True:
        lags = {sub.name: lag(sub) for sub in outbox_subscribers()}
        if not any(lags.values()) or time.monotonic() > deadline:
            return lags
        time.sleep(0.5)


# --- pgbench: the database ceiling ------------------------------------------------------------------

# The statements one command (MarkDelivered) runs, in its transaction, against copies of the tables
# (LIKE ... INCLUDING ALL keeps their indexes and constraints, so inserts pay the same index cost).
# Measured with tests/observability/test_query_counts.py's capture; keep them in step.
PGBENCH_SETUP = """
DROP TABLE IF EXISTS pgb_escrow, pgb_event, pgb_outbox, pgb_command, pgb_ids;
CREATE TABLE pgb_escrow (LIKE escrow_escrow INCLUDING ALL);
CREATE TABLE pgb_event (LIKE escrow_escrowevent INCLUDING ALL);
CREATE TABLE pgb_outbox (LIKE outbox_outboxmessage INCLUDING ALL);
CREATE TABLE pgb_command (LIKE escrow_processedcommand INCLUDING ALL);
INSERT INTO pgb_escrow SELECT * FROM escrow_escrow;
-- Picks an escrow by number with one primary-key read (the real command knows its id already).
CREATE TABLE pgb_ids AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM pgb_escrow;
ALTER TABLE pgb_ids ADD PRIMARY KEY (n);
"""
# One MarkDelivered, statement for statement as the command handler sends them (see
# tests/observability/test_query_counts.py, which pins that list): stream lock, lock the escrow, claim the
# command id, audit row, state change, the event and the command to the outbox with the NOTIFY.
PGBENCH_SCRIPT = r"""
\set n random(1, :escrows)
BEGIN;
SELECT id AS escrow_id FROM pgb_ids WHERE n = :n \gset
SELECT pg_advisory_xact_lock(hashtextextended('stream:' || ':escrow_id', 0));
SELECT * FROM pgb_escrow WHERE id = ':escrow_id' FOR UPDATE;
INSERT INTO pgb_command (command_id, escrow_id, type, processed_at)
  VALUES (gen_random_uuid(), ':escrow_id', 'escrow.v1.MarkDelivered', now()) ON CONFLICT (command_id) DO NOTHING RETURNING 1;
INSERT INTO pgb_event (escrow_id, version, event_id, type, payload, data, actor_kind, actor_id, command_id,
                       causation_id, correlation_id, occurred_at)
  SELECT id, version + 1, gen_random_uuid(), 'escrow.v1.EscrowDelivered', '\x0a24'::bytea, '{}'::jsonb, 'user', 1,
         gen_random_uuid(), '', 'bench', now() FROM pgb_escrow WHERE id = ':escrow_id';
UPDATE pgb_escrow SET version = version + 1, updated_at = now() WHERE id = ':escrow_id';
INSERT INTO pgb_outbox (event_id, topic, key, type, aggregate_id, aggregate_version, payload, occurred_at,
                        correlation_id, causation_id, traceparent)
  VALUES (gen_random_uuid(), 'escrow.events.v1', ':escrow_id', 'escrow.v1.EscrowDelivered', ':escrow_id', 1,
          '\x0a24'::bytea, now(), 'bench', '', ''),
         (gen_random_uuid(), 'escrow.commands.v1', ':escrow_id', 'escrow.v1.MarkDelivered', ':escrow_id', 1,
          '\x0a24'::bytea, now(), 'bench', '', '')
  RETURNING id, (SELECT pg_notify('pgbench', ''));
COMMIT;
"""


def pgbench(database: str, seconds: int, clients: int) -> dict[str, Any]:
    if shutil.which("pgbench") is None:
        return {"skipped": "pgbench not installed"}
    import psycopg

    url = f"postgres://postgres@127.0.0.1:5432/{database}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PGBENCH_SETUP)
        escrows = conn.execute("SELECT count(*) FROM pgb_escrow").fetchone()[0]
    script = PGBENCH_SCRIPT
    if escrows == 0:
        return {"skipped": "no escrows to lock"}
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "pgbench",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-n",
                "-f",
                f.name,
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-D",
                f"escrows={escrows}",
                "-P",
                "5",
                database,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(f.name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS pgb_escrow, pgb_event, pgb_outbox, pgb_command, pgb_ids")
    figures: dict[str, Any] = {"clients": clients, "seconds": seconds}
    for line in out.stdout.splitlines():
        if line.startswith("tps ="):
            figures["transactions_per_s"] = round(float(line.split()[2]), 1)
        if line.startswith("latency average"):
            figures["latency_avg_ms"] = float(line.split()[3])
        if "failed transactions" in line:
            figures["failed"] = line.split(":")[1].strip()
    if "transactions_per_s" not in figures:
        figures["error"] = (out.stderr or out.stdout)[-800:]
    return figures


# --- profiles (py-spy) ---------------------------------------------------------------------------


def start_profilers(stack: Stack, stamp: str, seconds: float) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    spy = ROOT / ".venv" / "bin" / "py-spy"
    targets: dict[str, int] = {}
    gunicorn = stack.procs.get("gunicorn")
    if gunicorn is not None and children(gunicorn.pid):
        targets["gunicorn-worker"] = children(gunicorn.pid)[0]
    if "run_bus" in stack.procs:
        targets["bus-worker"] = stack.procs["run_bus"].pid
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = {}
    for name, pid in targets.items():
        out = RESULTS / f"{stamp}-{name}.folded"
        proc = subprocess.Popen(
            [
                str(spy),
                "record",
                "--format",
                "raw",
                "--rate",
                "50",
                "--nonblocking",
                "-d",
                str(int(seconds)),
                "-p",
                str(pid),
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started[name] = (proc, out)
    return started


def finish_profilers(profilers: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> dict[str, Any]:
    """Waits for py-spy and returns, per process, the share of samples in which each of our functions
    was on the stack (inclusive), and the share spent waiting on the database."""
    summary: dict[str, Any] = {}
    for name, (proc, out) in profilers.items():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        if not out.exists():
            summary[name] = "no profile (py-spy needs ptrace permission)"
            continue
        inclusive: Counter[str] = Counter()
        total = 0
        for line in out.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            # Our own functions (file without line number), counted once per sample they appear in.
            ours = {frame.rsplit(":", 1)[0] + ")" for frame in stack_text.split(";") if "(apps/" in frame}
            for frame in ours:
                inclusive[frame] += int(count)
            inclusive["(waiting on PostgreSQL: psycopg Connection.wait)"] += int(count) * (
                "Connection.wait" in stack_text
            )
        summary[name] = {
            "samples": total,
            "file": str(out.relative_to(ROOT)),
            "top": [(frame, round(n / total, 3)) for frame, n in inclusive.most_common(15)] if total else [],
        }
    return summary


# --- scale-out: throughput per core as processes are added (--scale) -----------------------------------

SUBSCRIBERS = ("escrow", "payments", "projections", "notifications")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_backends(database: str) -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database])
        return [int(row[0]) for row in cursor.fetchall()]


def stack_pids(stack: Stack) -> dict[str, list[int]]:
    """The processes whose CPU a step pays for, by tier: web (gunicorn workers), bus (run_bus and the
    `consume` processes of apps split out), relay (relay_outbox)."""
    web: list[int] = []
    bus: list[int] = []
    relay: list[int] = []
    for name, proc in stack.procs.items():
        if name == "gunicorn":
            web += [proc.pid, *children(proc.pid)]
        elif name.startswith(("run_bus", "consume")):
            bus.append(proc.pid)
        elif name == "relay_outbox":
            relay.append(proc.pid)
    return {"web": web, "bus": bus, "relay": relay}


def cpu_snapshot(stack: Stack, database: str, broker_pid: int | None = None) -> dict[str, dict[int, float]]:
    tiers = stack_pids(stack)
    # The broker counts only when this run started it (a local Tansu): an external one is not measured.
    tiers["broker"] = [broker_pid] if broker_pid else []
    tiers["database"] = database_backends(database)
    tiers["load generator"] = [os.getpid()]
    return {tier: {pid: cpu_seconds(pid) for pid in pids} for tier, pids in tiers.items()}


def load_cpu_snapshot(stack: Stack, database: str) -> dict[str, dict[int, float]]:
    """cpu_snapshot for the open-model load: the database's backends found from /proc (those the web
    workers open during the load count from zero), the fake Stripe of the webhook load as a tier of its
    own (in production that CPU is Stripe's), and the whole machine's busy CPU seconds (/proc/stat)."""
    snapshot = cpu_snapshot(stack, database)
    backends: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if proc.name.isdigit() and f" {database} " in (proc / "cmdline").read_text().replace("\0", " "):
                backends[int(proc.name)] = cpu_seconds(int(proc.name))
    snapshot["database"] = backends
    fake = stack.procs.get("stripe_fake")
    snapshot["fake Stripe"] = {fake.pid: cpu_seconds(fake.pid)} if fake else {}
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    snapshot["machine (all processes)"] = {0: (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS}
    return snapshot


def load_cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per tier between two load snapshots; a process started in between counts from zero."""
    return {
        tier: round(sum(cpu - before.get(tier, {}).get(pid, 0.0) for pid, cpu in pids.items()), 2)
        for tier, pids in after.items()
    }


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each tier used between two snapshots (processes present in both)."""
    return {
        tier: round(sum(after[tier][pid] - cpu for pid, cpu in pids.items() if pid in after.get(tier, {})), 2)
        for tier, pids in before.items()
    }


def scale_steps(cores: int) -> list[int]:
    """1, 2, 4, ... up to the machine's cores, and the core count itself: no constant assumes 2."""
    steps, n = [], 1
    while n < cores:
        steps.append(n)
        n *= 2
    return [*steps, cores]


def bus_groups(processes: int, names: tuple[str, ...] = SUBSCRIBERS) -> list[str]:
    """The subscribers dealt round-robin over this many bus processes (at most one per subscriber)."""
    if not names:
        return []
    groups: list[list[str]] = [[] for _ in range(max(1, min(processes, len(names))))]
    for n, name in enumerate(names):
        groups[n % len(groups)].append(name)
    return [",".join(g) for g in groups]


# Apps split out by default in the Kafka topology: what the read side and the money side consume; escrow
# (the state machine's reactions) stays on the outbox bus, in `run_bus`.
KAFKA_SPLIT = ("payments", "projections", "notifications")
# Consumers per split app: one per this many web processes (at least one; never more than the topic's
# partitions, KAFKA_TOPIC_PARTITIONS, since a group's extra members would sit idle).
WEB_PER_CONSUMER = 4


@dataclass
class Topology:
    """The processes of one scale step: N gunicorn workers, `run_bus` processes (each feeding a group of
    subscribers from the outbox) and, with a broker, the relay and `consume` processes per split app."""

    web: int
    bus_groups: list[str]
    consumers: dict[str, int] = field(default_factory=dict)  # split app -> `consume` processes

    @property
    def kafka(self) -> bool:
        return bool(self.consumers)

    @property
    def in_process(self) -> str:
        """BUS_OUTBOX_SUBSCRIBERS for every process of the step: the apps the outbox bus feeds."""
        return ",".join(self.bus_groups)

    @property
    def label(self) -> str:
        bus = f"{self.web} x {len(self.bus_groups)}"
        if not self.kafka:
            return bus
        consumers = sum(self.consumers.values())
        return f"{bus} + relay + {consumers} consume ({', '.join(self.consumers)})"


def outbox_topology(web: int) -> Topology:
    """The outbox-bus step: half as many bus processes as web processes, the four subscribers dealt over them."""
    return Topology(web=web, bus_groups=bus_groups(max(1, (web + 1) // 2)))


def kafka_topology(web: int, split: tuple[str, ...], partitions: int) -> Topology:
    """The split step: the apps in `split` each consumed from Kafka by their own `consume` processes, the
    others left on the outbox bus (as many `run_bus` as the outbox step gives them, at most one per app)."""
    unknown = sorted(set(split) - set(SUBSCRIBERS))
    if unknown or not split:
        raise ValueError(f"split apps must be some of {', '.join(SUBSCRIBERS)}; got {', '.join(split) or 'none'}")
    in_process = tuple(name for name in SUBSCRIBERS if name not in split)
    per_app = max(1, min(partitions, math.ceil(web / WEB_PER_CONSUMER)))
    return Topology(
        web=web,
        bus_groups=bus_groups(max(1, (web + 1) // 2), in_process),
        consumers={app: per_app for app in SUBSCRIBERS if app in split},
    )


def start_stack(
    stack: Stack, env: dict[str, str], port: int, *, topology: Topology, threads: int, kafka: str = "", group: str = ""
) -> None:
    if topology.kafka:
        env = {**env, "BUS_OUTBOX_SUBSCRIBERS": topology.in_process, "KAFKA_BOOTSTRAP_SERVERS": kafka}
    stack.start(
        "gunicorn",
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "escrow_project.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(topology.web),
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "--backlog",
            "2048",
            "--log-level",
            "warning",
        ],
        env,
    )
    for n, subscribers in enumerate(topology.bus_groups):
        # One process per group of subscribers; escrow timers fire in the first only.
        argv = [PY, "manage.py", "run_bus"] + (["--no-timers"] if n else [])
        stack.start("run_bus" + (f" {n + 1}" if n else ""), argv, {**env, "BUS_OUTBOX_SUBSCRIBERS": subscribers})
    if topology.kafka:
        stack.start("relay_outbox", [PY, "manage.py", "relay_outbox"], env)
        for app, replicas in topology.consumers.items():
            for n in range(replicas):
                stack.start(
                    f"consume {app} {n + 1}", [PY, "manage.py", "consume", app, "--group", f"{group}-{app}"], env
                )


def outbox_high_water() -> int:
    """The newest outbox row's id: a step's rows are those after it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM outbox_outboxmessage")
        return int(cursor.fetchone()[0])


def pending(topology: Topology, since_id: int) -> dict[str, int]:
    """What is not yet applied, per subscriber: outbox-bus subscribers by their checkpoint's lag; with a
    broker, the rows the relay has not published and, per split app, the rows of this step on its topics
    and types that its `consume` processes have not recorded as processed (the same dedupe records)."""
    from django.db import connection

    from apps.outbox.public import lag, unpublished_rows
    from apps.outbox.registry import get_subscriber

    figures = {name: lag(get_subscriber(name)) for group in topology.bus_groups for name in group.split(",")}
    if topology.kafka:
        figures["relay (unpublished)"] = unpublished_rows().filter(id__gt=since_id).count()
        with connection.cursor() as cursor:
            for app in topology.consumers:
                subscriber = get_subscriber(app)
                cursor.execute(
                    """SELECT count(*) FROM outbox_outboxmessage o
                       WHERE o.id > %s AND o.topic = ANY(%s) AND o.type = ANY(%s) AND NOT EXISTS (
                         SELECT 1 FROM outbox_processedmessage p WHERE p.subscriber = %s AND p.event_id = o.event_id)""",
                    [since_id, sorted(subscriber.topics), sorted(subscriber.types), app],
                )
                figures[f"{app} (consume)"] = int(cursor.fetchone()[0])
    return figures


def wait_settled(topology: Topology, since_id: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        figures = pending(topology, since_id)
        if not any(figures.values()) or time.monotonic() > deadline:
            return figures
        time.sleep(0.5)


@dataclass
class Broker:
    """The Kafka-protocol broker of the split topology: its bootstrap servers, and its pid when this run
    started it (then its CPU is counted with the server's)."""

    servers: str
    pid: int | None = None


def prepare_kafka_step(broker: Broker, topology: Topology, group: str) -> None:
    """Before a split step: the outbox rows of earlier steps were applied on the outbox bus, so they are
    marked published (the relay starts at this step's rows), and each split app's consumer group for the
    step is committed at the end of its topics (it reads only what this step publishes)."""
    from apps.outbox.public import OutboxMessage
    from apps.outbox.reader import advance_relay_checkpoint, relay_position
    from apps.outbox.registry import get_subscriber

    last = OutboxMessage.objects.order_by("-txid", "-id").values_list("txid", "id").first()
    relay_position()  # the checkpoint row exists
    if last is not None:
        advance_relay_checkpoint(last)
    for app in topology.consumers:
        asyncio.run(park_group(broker.servers, f"{group}-{app}", sorted(get_subscriber(app).topics)))


async def park_group(servers: str, group: str, topics: list[str]) -> None:
    """Commits a new consumer group's offsets at the end of every partition of `topics`. (Tansu 0.6
    answers the end offset with its last batch's base offset + 1: a few records are read again during the
    step's warm-up, where the dedupe makes them no-ops; the measured phase comes after.)"""
    from apps.outbox.kafka.client import make_consumer

    consumer = make_consumer(
        *topics, servers=servers, group_id=group, enable_auto_commit=False, auto_offset_reset="latest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer group {group} got no partitions within 60 s")
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({tp: await consumer.position(tp) for tp in consumer.assignment()})
    finally:
        await consumer.stop()


def scale_step(
    args: argparse.Namespace,
    database_url: str,
    tokens: list[tuple[str, str]],
    topology: Topology,
    broker: Broker | None = None,
) -> dict[str, Any]:
    stack = Stack()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = topology.web
    offered = args.scale_offered * web
    name = f"scale {topology.label}"
    step: dict[str, Any] = {
        "topology": "kafka" if topology.kafka else "outbox",
        "label": topology.label,
        "web_processes": web,
        "bus_processes": len(topology.bus_groups),
        "bus_groups": topology.bus_groups,
        "consumers": topology.consumers,
    }
    group = f"bench-{os.getpid()}-w{web}"
    env = django_env(database_url, inline=False)
    if broker is not None and broker.pid:
        env["KAFKA_ENABLE_IDEMPOTENCE"] = "0"  # Tansu refuses the idempotent producer
    broker_pid = broker.pid if broker else None
    try:
        if topology.kafka:
            assert broker is not None
            prepare_kafka_step(broker, topology, group)
        since_id = outbox_high_water()
        start_stack(
            stack,
            env,
            port,
            topology=topology,
            threads=args.threads,
            kafka=broker.servers if broker else "",
            group=group,
        )
        wait_until_up(base, stack)
        progress(f"{name}: warm-up")
        warm, _ = asyncio.run(
            open_model(base, tokens, commands_per_s=20, queries_per_s=20, duration=2, max_in_flight=64)
        )
        # With a broker this also waits for the consumers to join their groups and read the warm-up.
        wait_settled(topology, since_id, timeout=90)

        progress(f"{name}: {offered} commands/s offered for {args.scale_seconds}s")
        since_id = outbox_high_water()
        before = cpu_snapshot(stack, args.database, broker_pid)
        started = time.monotonic()
        load, elapsed = asyncio.run(
            open_model(
                base,
                tokens,
                commands_per_s=offered,
                queries_per_s=0,
                duration=args.scale_seconds,
                max_in_flight=args.max_in_flight,
            )
        )
        lags = wait_settled(topology, since_id, timeout=120)
        settled = time.monotonic() - started
        cpu = cpu_used(before, cpu_snapshot(stack, args.database, broker_pid))
        commands = [r for r in load.records if r.kind in EVENT_OF]
        accepted = sum(r.status == 202 for r in commands)
        server_cpu = cpu["web"] + cpu["bus"] + cpu["relay"] + cpu["broker"] + cpu["database"]
        step["commands"] = {
            "offered_per_s": offered,
            "accepted_per_s": round(accepted / elapsed, 1),
            # Every accepted command's events applied by every subscriber: the end-to-end rate.
            "settled_per_s": round(accepted / settled, 1),
            "latency": percentiles([r.latency for r in commands if r.status == 202]),
            # Scheduled send -> projections applied its event (create, accept, deliver, release).
            "command_to_event": event_latencies(load)["command_to_event"],
            "errors": dict(load.errors),
            # Requests that failed (a request with no answer is in `errors` under its exception).
            "failed": sum(r.status != 202 and not (r.status in (404, 409) and r.kind != "create") for r in commands),
            "early": dict(load.early),
            "cpu_s": cpu,
            "cpu_ms_per_command": {
                tier: round(seconds * 1000 / accepted, 2) if accepted else None for tier, seconds in cpu.items()
            },
            "per_cpu_second": round(accepted / server_cpu, 1) if server_cpu else None,
            "bus_lag_at_end": lags,
        }
        if topology.kafka:
            # Reads do not touch the bus: the outbox step of the same web count measured them.
            step["reads"] = None
            return step

        escrow_id, pair = (warm.escrows or load.escrows or [("00000000-0000-0000-0000-000000000000", 0)])[0]
        progress(f"{name}: GET escrow closed loop for {args.scale_seconds}s")
        before = cpu_snapshot(stack, args.database)
        reads = asyncio.run(
            closed_loop(
                base,
                f"/api/v1/escrows/{escrow_id}",
                tokens[pair][0],
                seconds=args.scale_seconds,
                concurrency=8 * web,
            )
        )
        cpu = cpu_used(before, cpu_snapshot(stack, args.database))
        server_cpu = cpu["web"] + cpu["database"]
        step["reads"] = {
            **reads,
            "cpu_s": cpu,
            "per_cpu_second": round(reads["requests_per_s"] * args.scale_seconds / server_cpu, 1)
            if server_cpu
            else None,
        }
    finally:
        stack.stop()
    return step


def scale_chart(result: dict[str, Any], path: Path) -> str:
    """The PNG beside the markdown: throughput against processes, command latency and command-to-event
    latency against offered rate; solid lines the outbox bus, dashed the apps split out through Kafka."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (requirements-dev.txt)"
    outbox = [s for s in result["steps"] if s.get("topology", "outbox") == "outbox"]
    kafka = [s for s in result["steps"] if s.get("topology") == "kafka"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.4))
    web = sorted({s["web_processes"] for s in result["steps"]})
    for steps, style, topology in ((outbox, "o-", "outbox bus"), (kafka, "D--", "split via Kafka")):
        if steps:
            left.plot(
                [s["web_processes"] for s in steps],
                [s["commands"]["settled_per_s"] for s in steps],
                style,
                label=f"commands/s settled, {topology}",
            )
    if outbox:
        left.plot(
            [s["web_processes"] for s in outbox],
            [s["reads"]["requests_per_s"] / 10 for s in outbox],
            "s:",
            label="GET escrow/s ÷ 10",
        )
    left.set_xlabel("web processes (bus, relay, consumers: see table)")
    left.set_ylabel("per second")
    left.set_xticks(web)
    left.set_title(f"throughput against processes ({result['cores']} cores)")
    left.legend(fontsize="small")
    for axis, figure, ylabel in (
        (middle, "latency", "command HTTP latency, ms (from the scheduled send)"),
        (right, "command_to_event", "command-to-event, ms (scheduled send -> projections applied)"),
    ):
        for steps, style, topology in ((outbox, "o-", "outbox"), (kafka, "D--", "Kafka")):
            for colour, q in zip(("C0", "C1", "C2"), ("p50_ms", "p95_ms", "p99_ms"), strict=True):
                if steps:
                    axis.plot(
                        [s["commands"]["offered_per_s"] for s in steps],
                        [(s["commands"].get(figure) or {}).get(q) or 0 for s in steps],
                        style,
                        color=colour,
                        label=f"{q.replace('_ms', '')} {topology}",
                    )
        axis.set_xlabel("commands/s offered")
        axis.set_ylabel(ylabel, fontsize="small")
        axis.set_yscale("log")
        axis.set_title("latency against offered rate")
        axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart: {path.name}"


def _triple(figures: dict[str, Any] | None) -> str:
    figures = figures or {}
    return f"{figures.get('p50_ms')} / {figures.get('p95_ms')} / {figures.get('p99_ms')}"


def render_scale(result: dict[str, Any]) -> str:
    kafka = result.get("kafka")
    lines = [
        f"# Scale-out {result['started_at']}",
        "",
        f"{result['cores']} cores (os.cpu_count()), shared machine: load average {result['load_average']} before the "
        f"run. Each step: N gunicorn workers x gthread({result['threads']}) and M `run_bus` processes (the "
        f"subscribers dealt over them), open-model commands at {result['offered_per_web']}/s per web process for "
        f"{result['seconds']} s (a trade steps create -> accept -> pay -> deliver -> release), then closed-loop "
        "`GET /escrows/{id}`. CPU seconds from /proc for the stack's processes and the database's backends.",
    ]
    if kafka:
        lines += [
            "",
            f"Split steps (`+ relay + ... consume`): {', '.join(kafka['split'])} leave the outbox bus and are each "
            f"consumed from the broker ({kafka['broker']}) by `manage.py consume`, fed by one `relay_outbox`; the "
            "other apps stay on `run_bus`. The same commands, no GET phase (reads do not touch the bus). "
            + (
                "The broker's CPU is counted with the server's."
                if kafka.get("broker_measured")
                else "The broker's CPU is not measured (an external broker)."
            ),
        ]
    lines += [
        "",
        "| web x bus | commands/s accepted | settled (all events applied) | command p50/p95/p99 ms | command-to-event "
        "p50/p95/p99 ms | commands per server CPU-second | CPU ms per command: web / bus / relay / broker / db | "
        "GET/s | GETs per CPU-second | failed requests; steps retried early |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["steps"]:
        c, r = s["commands"], s["reads"]
        per = c.get("cpu_ms_per_command") or {}
        tiers = " / ".join(str(per.get(t)) for t in ("web", "bus", "relay", "broker", "database"))
        lines.append(
            f"| {s.get('label') or str(s['web_processes']) + ' x ' + str(s['bus_processes'])} | {c['accepted_per_s']} "
            f"| {c['settled_per_s']} | {_triple(c['latency'])} | {_triple(c.get('command_to_event'))} | "
            f"{c['per_cpu_second']} | {tiers} | {r['requests_per_s'] if r else '-'} | "
            f"{r['per_cpu_second'] if r else '-'} | {c.get('failed', sum((c.get('errors') or {}).values()))}; "
            f"{sum((c.get('early') or {}).values())} |"
        )
    lines.append("")
    for topology in ("outbox", "kafka"):
        steps = [s for s in result["steps"] if s.get("topology", "outbox") == topology]
        if len(steps) < 2:
            continue
        first, last = steps[0], steps[-1]
        grow = (
            last["commands"]["settled_per_s"] / first["commands"]["settled_per_s"]
            if first["commands"]["settled_per_s"]
            else 0
        )
        lines.append(
            f"{'Outbox bus' if topology == 'outbox' else 'Split via Kafka'}: from {first['web_processes']} to "
            f"{last['web_processes']} web processes settled commands/s grew x{grow:.2f}."
        )
    lines += [
        "",
        result.get("chart", ""),
        "",
        f"Reproduce: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def start_broker(requested: str) -> tuple[Broker, Any]:
    """The broker of --scale-kafka: the one named, else KAFKA_BOOTSTRAP_SERVERS, else a Tansu broker on a free
    loopback port started for this run (as bench/relay_bench.py does); returns it and what to stop."""
    servers = requested if requested != "auto" else os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if servers:
        # The catalog's topics, as `make`'s deployments create them (idempotent).
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers}
        subprocess.run([PY, "manage.py", "kafka_topics"], cwd=ROOT, env=env, check=True, capture_output=True)
        return Broker(servers=servers), None
    from tests.kafka.broker import TansuBroker

    tansu = TansuBroker()
    tansu.start()
    assert tansu.process is not None
    return Broker(servers=tansu.bootstrap, pid=tansu.process.pid), tansu


def scale_main(args: argparse.Namespace) -> int:
    started_at = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    database_url = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    cores = os.cpu_count() or 1
    split = tuple(name for name in args.scale_split.split(",") if name)
    partitions = int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "12"))
    if args.scale_kafka:
        kafka_topology(1, split, partitions)  # refuses an unknown app before anything starts
    result: dict[str, Any] = {
        "started_at": started_at,
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "cores": cores,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "threads": args.threads,
        "offered_per_web": args.scale_offered,
        "seconds": args.scale_seconds,
        "steps": [],
    }
    tansu = None
    REPORTER.__enter__()
    try:
        progress(f"fresh database {args.database}")
        reset_database(args.database)
        tokens = prepare(database_url, args.pairs)
        for web in scale_steps(cores):
            result["steps"].append(scale_step(args, database_url, tokens, outbox_topology(web)))
        if args.scale_kafka:
            broker, tansu = start_broker(args.scale_kafka)
            progress(f"broker {broker.servers}" + (" (Tansu, started for this run)" if tansu else ""))
            result["kafka"] = {
                "broker": "Tansu 0.6 on loopback, started for the run" if tansu else broker.servers,
                "broker_measured": broker.pid is not None,
                "split": list(split),
            }
            for web in scale_steps(cores):
                topology = kafka_topology(web, split, partitions)
                result["steps"].append(scale_step(args, database_url, tokens, topology, broker))
    except KeyboardInterrupt:
        REPORTER.summary("bench interrupted")
        return 130
    finally:
        if tansu is not None:
            tansu.stop()
        REPORTER.__exit__(None, None, None)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        result["chart"] = scale_chart(result, RESULTS / f"{started_at}-scale.png")
        (RESULTS / f"{started_at}-scale.json").write_text(json.dumps(result, indent=2, default=str))
    markdown = render_scale(result)
    print(markdown)
    if not args.no_write:
        (RESULTS / f"{started_at}-scale.md").write_text(markdown)
        progress(f"wrote bench/results/{started_at}-scale.md, .json and .png")
    return 0


# --- report -----------------------------------------------------------------------------------------


def ratio(value: float | None, ceiling: float | None) -> str:
    if not value or not ceiling:
        return "n/a"
    return f"{value / ceiling:.0%}"


def webhook_rows(wh: dict[str, Any] | None, cfg: dict[str, Any], lat: Any) -> list[str]:
    if not wh:
        return []
    return [
        f"| webhooks/s answered 2xx (Stripe payment_intent.succeeded, offered {cfg['webhooks_per_s']}/s, "
        f"{wh['duplicates_sent']} duplicate deliveries; over the load and its tail) | {wh['accepted_per_s']} | "
        f"escrows funded per s while the clock sent: {wh['funds_held_per_s_while_sending']} | |",
        f"| webhook HTTP latency p50/p95/p99 (from the scheduled send) | {lat(wh['http_latency'])} | | |",
        f"| **webhook-to-event p50/p95/p99** (scheduled send -> projections applied EscrowFundsHeld) | "
        f"{lat(wh['webhook_to_event'])} | server side (webhook stored -> applied): "
        f"{lat(wh['webhook_to_event_server'])} | |",
        f"| of which: webhook stored -> EscrowFundsHeld occurred; occurred -> projections applied | "
        f"{lat(wh['received_to_funds_held'])}; {lat(wh['funds_held_to_applied'])} | | |",
        f"| webhook answers; errors (non-2xx, client) | {wh['answers']}; {wh['errors'] or 'none'} | | |",
        f"| escrows without EscrowFundsHeld at the end; with more than one | {wh['escrows_without_funds_held']}; "
        f"{wh['escrows_with_more_than_one_funds_held']} | | |",
    ]


def render_markdown(result: dict[str, Any]) -> str:
    cfg, load, ev, ceil = result["config"], result["load"], result["events"], result["ceilings"]

    def lat(p: dict[str, Any]) -> str:
        return f"{p['p50_ms']} / {p['p95_ms']} / {p['p99_ms']} ms (n={p['n']})" if p.get("n") else "no samples"

    lines = [
        f"# Bench {result['started_at']}",
        "",
        f"gunicorn {cfg['workers']} x gthread({cfg['threads']}), bus: "
        f"{'inline after commit' if cfg['inline'] else 'run_bus: ' + (cfg.get('bus_split') or 'one worker')}, offered {cfg['commands_per_s']} "
        f"commands/s + {cfg['queries_per_s']} queries/s for {cfg['duration_s']} s; machine: "
        f"{os.cpu_count()} cores, shared (figures are noisy); load average before the load "
        f"{result.get('load_average_before')}.",
        "",
        "| figure | value | ceiling (same run) | ratio |",
        "|---|---|---|---|",
        f"| sustained commands/s (202s) | {load['commands_per_s']} | pgbench, one command's SQL: "
        f"{ceil['pgbench'].get('transactions_per_s', 'n/a')} tx/s | "
        f"{ratio(load['commands_per_s'], ceil['pgbench'].get('transactions_per_s'))} |",
        f"| queries/s (open model, 200s) | {load['queries_per_s']} | closed-loop max GET escrow: "
        f"{ceil['read_path']['requests_per_s']} /s | {ratio(load['queries_per_s'], ceil['read_path']['requests_per_s'])} |",
        f"| max GET escrow/s (closed loop) | {ceil['read_path']['requests_per_s']} | minimal Django view: "
        f"{ceil['framework']['requests_per_s']} /s | "
        f"{ratio(ceil['read_path']['requests_per_s'], ceil['framework']['requests_per_s'])} |",
        f"| query latency p50/p95/p99 | {lat(load['query_latency'])} | minimal view p50/p95/p99: "
        f"{lat(ceil['framework'])} | |",
        f"| command HTTP latency p50/p95/p99 | {lat(load['command_latency'])} | | |",
        f"| command-to-event p50/p95/p99 (scheduled send -> projections applied) | {lat(ev['command_to_event'])} "
        f"| server side (occurred_at -> applied): {lat(ev['command_to_event_server'])} | |",
        f"| webhook-to-event p50/p95/p99 (trades' sandbox pay step -> EscrowFundsHeld applied) | {lat(ev['webhook_to_event'])} "
        f"| server side: {lat(ev['webhook_to_event_server'])} | |",
        f"| events written/s (outbox rows) | {load['outbox_rows_per_s']} | relay: "
        f"{ceil.get('relay', {}).get('summary', 'not run (--relay)')} | |",
        f"| database transactions per HTTP request (all processes) | {load['db_transactions_per_request']} | | |",
        f"| errors | {load['errors'] or 'none'} | | |",
        f"| steps retried because the bus had not caught up (404/409) | {load['early'] or 'none'} | | |",
        f"| accepted commands whose event was not applied by the end | {ev['accepted_without_event']} | | |",
        *webhook_rows(result.get("webhooks"), cfg, lat),
        f"| bus lag at the end | {result['bus_lag_at_end']} | | |",
        "",
        f"Metrics scrape during the run: {result.get('metrics_check')}",
        "",
        "CPU seconds during the load, by tier: "
        + ", ".join(f"{k} {v}" for k, v in (result.get("cpu_s") or {}).items())
        + f" (over {result.get('cpu_window_s')} s, the load and its tail, on {os.cpu_count()} cores)",
        "",
        "Memory (RSS, MB): " + ", ".join(f"{k} {v}" for k, v in result["memory_mb"].items()),
        "",
        f"Reproduce: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--commands-per-s", type=float, default=15, help="escrow commands per second in the open-model load; default 15"
    )
    parser.add_argument(
        "--queries-per-s", type=float, default=40, help="GET queries per second in the open-model load; default 40"
    )
    parser.add_argument("--duration", type=float, default=60, help="seconds of open-model load")
    parser.add_argument(
        "--ceiling-seconds",
        type=float,
        default=10,
        help="seconds for each closed-loop ceiling (framework, read path, pgbench); default 10",
    )
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes; default 3")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker; default 4")
    parser.add_argument(
        "--bus-split",
        default="",
        help='run one bus worker per group of subscribers, e.g. "escrow,payments;projections,notifications"',
    )
    parser.add_argument("--inline", action="store_true", help="drain the bus in the request thread, no run_bus")
    parser.add_argument("--pairs", type=int, default=50, help="buyer/seller pairs")
    parser.add_argument(
        "--max-in-flight", type=int, default=256, help="requests the load generator keeps open at most; default 256"
    )
    parser.add_argument(
        "--database",
        default="escrow_bench",
        help="PostgreSQL database on 127.0.0.1:5432, dropped and created afresh; default escrow_bench",
    )
    parser.add_argument(
        "--webhooks-per-s",
        type=float,
        default=0,
        help="signed Stripe payment_intent.succeeded webhooks per second, each for its own escrow prepared in "
        "AWAIT_FUNDS on the card rail (Stripe faked on loopback); default 0 (off)",
    )
    parser.add_argument(
        "--webhook-duplicates",
        type=float,
        default=0,
        help="with --webhooks-per-s: the share of webhooks delivered a second time, 0 to 2 s later; default 0",
    )
    parser.add_argument("--relay", action="store_true", help="also run bench/relay_bench.py")
    parser.add_argument("--no-write", action="store_true", help="print the summary only")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy samples one gunicorn worker and the bus worker during the load"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="scale-out: 1, 2, 4, ... os.cpu_count() web processes, with half as many bus processes; throughput "
        "per core and a PNG chart (docs/capacity.md)",
    )
    parser.add_argument(
        "--scale-offered", type=float, default=150, help="with --scale: commands/s offered per web process"
    )
    parser.add_argument("--scale-seconds", type=float, default=15, help="with --scale: seconds of each phase")
    parser.add_argument(
        "--scale-kafka",
        nargs="?",
        const="auto",
        default="",
        metavar="BOOTSTRAP",
        help="with --scale (implied): then the same steps with apps split out (--scale-split), each consumed "
        "from this broker by `manage.py consume` and fed by `relay_outbox`; without a value "
        "KAFKA_BOOTSTRAP_SERVERS, else a local Tansu broker started for the run (docs/capacity.md)",
    )
    parser.add_argument(
        "--scale-split",
        default=",".join(KAFKA_SPLIT),
        help=f"with --scale-kafka: the apps consumed from Kafka; default {','.join(KAFKA_SPLIT)}",
    )
    args = parser.parse_args()
    if args.scale or args.scale_kafka:
        return scale_main(args)

    started_at = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    database_url = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    stack = Stack()
    result: dict[str, Any] = {
        "started_at": started_at,
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "config": {
            "workers": args.workers,
            "threads": args.threads,
            "inline": args.inline,
            "bus_split": args.bus_split,
            "commands_per_s": args.commands_per_s,
            "queries_per_s": args.queries_per_s,
            "duration_s": args.duration,
            "webhooks_per_s": args.webhooks_per_s,
            "webhook_duplicates": args.webhook_duplicates,
            "cache": bench_cache_url(),
        },
    }
    REPORTER.__enter__()
    try:
        progress(f"fresh database {args.database}")
        reset_database(args.database)
        stripe_api_base = ""
        if args.webhooks_per_s > 0:
            stripe_port = free_port()
            stripe_api_base = f"http://127.0.0.1:{stripe_port}"
            stack.start("stripe_fake", [PY, "bench/stripe_fake.py", "--port", str(stripe_port)], dict(os.environ))
            wait_for_port(stripe_port, stack, "stripe_fake")
        tokens = prepare(database_url, args.pairs, stripe_api_base=stripe_api_base)
        cards: list[CardEscrow] | None = None
        if args.webhooks_per_s > 0:
            count = int(args.webhooks_per_s * args.duration)
            progress(f"preparing {count} card escrows awaiting funds (Stripe on {stripe_api_base})")
            cards = prepare_card_escrows(count, args.pairs, stripe_api_base)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = django_env(database_url, inline=args.inline, stripe_api_base=stripe_api_base)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(stack.logs / "prometheus")
        os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"])
        progress(f"gunicorn {args.workers}x{args.threads} on {base}; logs in {stack.logs}")
        stack.start(
            "gunicorn",
            [
                str(ROOT / ".venv/bin/gunicorn"),
                "escrow_project.wsgi:application",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(args.workers),
                "-k",
                "gthread",
                "--threads",
                str(args.threads),
                "--backlog",
                "2048",
                "--log-level",
                "warning",
            ],
            env,
        )
        if not args.inline:
            groups = [g for g in args.bus_split.split(";") if g] or [""]
            for n, group in enumerate(groups):
                # One process per group of subscribers; escrow timers fire in the first only.
                argv = [PY, "manage.py", "run_bus"] + (["--no-timers"] if n else [])
                stack.start(
                    "run_bus" + (f" {n + 1}" if n else ""),
                    argv,
                    {**env, "BUS_OUTBOX_SUBSCRIBERS": group} if group else env,
                )
        wait_until_up(base, stack)

        progress(f"framework ceiling: /bench/noop closed loop for {args.ceiling_seconds}s")
        framework = asyncio.run(closed_loop(base, "/bench/noop", None, seconds=args.ceiling_seconds, concurrency=16))
        progress(f"  {framework['requests_per_s']} requests/s")

        progress(
            f"open-model load: {args.commands_per_s} commands/s + {args.queries_per_s} queries/s"
            + (f" + {args.webhooks_per_s} webhooks/s" if cards else "")
            + f" for {args.duration}s"
        )
        profilers = start_profilers(stack, started_at, args.duration) if args.profile else {}
        xacts_before = database_transactions(args.database)
        cpu_before, cpu_from = load_cpu_snapshot(stack, args.database), time.monotonic()
        result["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        load, elapsed = asyncio.run(
            open_model(
                base,
                tokens,
                commands_per_s=args.commands_per_s,
                queries_per_s=args.queries_per_s,
                duration=args.duration,
                max_in_flight=args.max_in_flight,
                webhooks_per_s=args.webhooks_per_s,
                cards=cards,
                duplicates=args.webhook_duplicates,
            )
        )
        memory_mb = memory(stack)
        # Over the load and its tail (the requests still open when the clock stopped sending).
        result["cpu_s"] = load_cpu_used(cpu_before, load_cpu_snapshot(stack, args.database))
        result["cpu_window_s"] = round(time.monotonic() - cpu_from, 1)
        result["metrics_check"] = metrics_check(base, sent=len(load.records))
        xacts = database_transactions(args.database) - xacts_before
        if profilers:
            result["profile"] = finish_profilers(profilers)

        progress("read-path maximum: GET escrow closed loop")
        escrow_id, pair = (
            load.escrows[0]
            if load.escrows
            else (cards[0].escrow_id, cards[0].pair)
            if cards
            else ("00000000-0000-0000-0000-000000000000", 0)
        )
        read_path = asyncio.run(
            closed_loop(
                base, f"/api/v1/escrows/{escrow_id}", tokens[pair][0], seconds=args.ceiling_seconds, concurrency=16
            )
        )
        progress(f"  {read_path['requests_per_s']} requests/s")

        progress("waiting for the bus to catch up")
        lags = wait_for_bus(timeout=60)
        from apps.outbox.models import OutboxMessage

        commands = [r for r in load.records if r.kind in EVENT_OF]
        queries = [r for r in load.records if r.kind == "query"]
        result["load"] = {
            "elapsed_s": round(elapsed, 1),
            "commands_per_s": round(sum(r.status == 202 for r in commands) / elapsed, 1),
            "queries_per_s": round(sum(r.status == 200 for r in queries) / elapsed, 1),
            "outbox_rows_per_s": round(OutboxMessage.objects.count() / elapsed, 1),
            "trades_finished": load.trades_finished,
            # Every autocommit statement is a transaction of its own, so this counts round trips that
            # did not run inside a command's transaction: polling and reads show up here.
            "db_transactions_per_request": round(xacts / max(len(load.records), 1), 1),
            "command_latency": percentiles([r.latency for r in commands if r.status == 202]),
            "query_latency": percentiles([r.latency for r in queries if r.status == 200]),
            "errors": dict(load.errors),
            "early": dict(load.early),
        }
        result["events"] = event_latencies(load)
        if cards:
            result["webhooks"] = webhook_latencies(load, elapsed)
        result["bus_lag_at_end"] = lags
        result["memory_mb"] = memory_mb
        ceilings: dict[str, Any] = {"framework": framework, "read_path": read_path}
        stack.stop()  # the database ceiling should not share the CPU with idle servers

        progress(f"database ceiling: pgbench for {int(args.ceiling_seconds)}s")
        ceilings["pgbench"] = pgbench(args.database, int(args.ceiling_seconds), clients=8)
        progress(f"  {ceilings['pgbench']}")
        if args.relay:
            progress("relay: bench/relay_bench.py")
            # A database of its own: the load left this one's outbox unpublished (no relay runs in the
            # stack), and relay_bench.py refuses a database with a backlog.
            relay_database = f"{args.database}_relay"
            reset_database(relay_database)
            out = subprocess.run(
                [PY, "bench/relay_bench.py"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
                env={**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{relay_database}"},
            )
            ceilings["relay"] = {
                "summary": (out.stdout.strip().splitlines() or ["failed"])[-1][:200],
                "output": out.stdout[-2000:],
                "returncode": out.returncode,
            }
        result["ceilings"] = ceilings
    except KeyboardInterrupt:
        REPORTER.summary("bench interrupted")
        return 130
    finally:
        stack.stop()
        REPORTER.__exit__(None, None, None)

    markdown = render_markdown(result)
    for name, profile in result.get("profile", {}).items():
        if isinstance(profile, dict):
            markdown += f"\nProfile {name} ({profile['samples']} samples, {profile['file']}), share of samples:\n\n"
            markdown += "\n".join(f"- {share:.0%} {frame}" for frame, share in profile["top"]) + "\n"
    print(markdown)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{started_at}.json").write_text(json.dumps(result, indent=2, default=str))
        (RESULTS / f"{started_at}.md").write_text(markdown)
        progress(f"wrote bench/results/{started_at}.md and .json")
    load_figures = result.get("load", {})
    REPORTER.summary(
        f"bench done: {load_figures.get('commands_per_s')} commands/s, "
        f"{load_figures.get('queries_per_s')} queries/s, errors {load_figures.get('errors')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
