"""The bus worker process SIGKILLed at random points while it works, and restarted.

Inline dispatch is off in this test process, so every reaction (payment intents, funds held, transfers,
refunds, read models, notifications) is left to `manage.py run_bus` subprocesses. Each phase issues a
batch of commands through the API, then kills the worker several times, each time after it has handled
a random number of messages (so mid-batch, mid-transaction or between the provider call and its
record), restarting it until every subscriber is caught up. At the end: every subscriber applied every
message it subscribes to exactly once, nothing was dead-lettered, the read model equals a rebuild from
the event log, each event owes each party exactly one notification, and every trade ended where its
commands lead."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from apps.escrow.models import Escrow, EscrowEvent
from apps.notifications.models import Notification
from apps.outbox.models import DeadLetter, OutboxMessage, ProcessedMessage
from apps.outbox.public import lag, outbox_subscribers
from apps.outbox.registry import get_subscriber
from apps.payments.models import PaymentArtifact
from apps.projections.rebuild import projection_rebuild
from apps.projections.tables import active_color, tables_for
from tests.faults.support import assert_records_agree, payment_commands
from tests.helpers import act, create_escrow, pay
from tests.projections.support import snapshot
from tests.properties.figures import record_figures

pytestmark = pytest.mark.postgres_only  # a second process needs the shared database

ROOT = Path(__file__).resolve().parents[2]
TRADES = 12
SEED = int(os.environ.get("FAULTS_SEED", "0")) or random.randrange(1, 10**6)
FIGURES: Counter[str] = Counter()


def _worker() -> subprocess.Popen[bytes]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "BUS_INLINE_DISPATCH": "0",
        "BUS_POLL_SECONDS": "0.1",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_bus"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _lags() -> dict[str, int]:
    return {sub.name: lag(sub) for sub in outbox_subscribers()}


def _handled() -> int:
    return ProcessedMessage.objects.count()


def _chaos(
    rng: random.Random, *, kills: int, done: Callable[[], bool] = lambda: True, limit_seconds: float = 180.0
) -> None:
    """Runs workers until the bus is caught up (and `done()`), SIGKILLing up to `kills` of them mid-work."""
    deadline = time.monotonic() + limit_seconds
    while True:
        worker = _worker()
        try:
            start, target = _handled(), rng.randint(1, 12)
            while True:
                assert worker.poll() is None, worker.stdout.read() if worker.stdout else b""
                assert time.monotonic() < deadline, f"the bus did not catch up: {_lags()}"
                if not any(_lags().values()) and done():
                    return
                if kills and _handled() - start >= target:
                    break
                time.sleep(rng.uniform(0, 0.02))
            worker.send_signal(signal.SIGKILL)
            kills -= 1
            FIGURES["bus workers SIGKILLed"] += 1
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
            worker.wait(30)


def _story(escrow_id: str) -> dict[str, Any]:
    """What happened to one escrow, for a failure message."""
    rows = OutboxMessage.objects.filter(aggregate_id=escrow_id).order_by("txid", "id")
    return {
        "outbox": [(r.type.rpartition(".")[2], r.aggregate_version) for r in rows],
        "processed": sorted(
            ProcessedMessage.objects.filter(event_id__in=[r.event_id for r in rows]).values_list(
                "subscriber", "event_id"
            )
        ),
        "artifacts": list(PaymentArtifact.objects.filter(escrow_id=escrow_id).values()),
    }


def test_bus_workers_killed_at_random_points_lose_and_repeat_nothing(api_client, buyer, seller, staff, settings):
    settings.BUS_INLINE_DISPATCH = False
    rng = random.Random(SEED)
    as_buyer, as_seller, as_staff = api_client(buyer), api_client(seller), api_client(staff)

    escrow_ids = [create_escrow(as_buyer, seller=seller, amount=f"{100 + n}.00")["escrow_id"] for n in range(TRADES)]
    _chaos(rng, kills=3)
    for escrow_id in escrow_ids:
        assert pay(as_buyer, escrow_id).status_code == 202
    _chaos(rng, kills=3)
    assert set(Escrow.objects.values_list("state", flat=True)) == {"FUNDS_HELD"}
    plan = {escrow_id: ("cancel", "release", "dispute")[n % 3] for n, escrow_id in enumerate(escrow_ids)}
    for escrow_id, path in plan.items():
        if path == "cancel":
            assert act(as_seller, escrow_id, "cancel", {"reason": "out of stock"}).status_code == 202
        else:
            assert act(as_seller, escrow_id, "deliver").status_code == 202
    _chaos(rng, kills=3)
    for escrow_id, path in plan.items():
        if path == "release":
            assert act(as_buyer, escrow_id, "release").status_code == 202
        elif path == "dispute":
            assert act(as_buyer, escrow_id, "dispute", {"reason": "not as described"}).status_code == 202
    _chaos(rng, kills=3)
    for escrow_id, path in plan.items():
        if path == "dispute":
            assert act(as_staff, escrow_id, "resolve", {"outcome": "refund"}).status_code == 202
    # A kill between a sandbox transfer's commit and its simulated webhook leaves the webhook owed; the
    # worker's tick sends it after OWED_AFTER_SECONDS, as Stripe re-sends one it got no answer for.
    finals = ("RELEASED", "REFUNDED")
    _chaos(rng, kills=3, done=lambda: not Escrow.objects.exclude(state__in=finals).exists())

    # every trade ended where its commands lead, once
    expected = {"cancel": "REFUNDED", "release": "RELEASED", "dispute": "REFUNDED"}
    for escrow_id, path in plan.items():
        state = Escrow.objects.get(pk=escrow_id).state
        if state != expected[path]:
            print(json.dumps(_story(escrow_id), default=str, indent=1))  # noqa: T201 - the failure's evidence
        assert state == expected[path], (path, escrow_id)
        assert sum(payment_commands(escrow_id).values()) == 1
        assert_records_agree(escrow_id)
    # lag is 0 and every subscriber applied every message it subscribes to exactly once
    assert not any(_lags().values())
    assert not DeadLetter.objects.exists()
    for sub in outbox_subscribers():
        owed = set(OutboxMessage.objects.filter(type__in=sub.types).values_list("event_id", flat=True))
        done = list(ProcessedMessage.objects.filter(subscriber=sub.name).values_list("event_id", flat=True))
        assert len(done) == len(set(done)) and set(done) == owed, sub.name
    # notifications: each notifying event owes each party exactly one
    notifying = get_subscriber("notifications").types
    for event in EscrowEvent.objects.filter(type__in=notifying).select_related("escrow"):
        users = sorted(Notification.objects.filter(event_id=event.event_id).values_list("user_id", flat=True))
        assert users == sorted([event.escrow.buyer_id, event.escrow.seller_id]), event.type
    # the read model built through all the crashes equals one rebuilt from the event log
    incremental = snapshot(tables_for(active_color()))
    assert len(incremental["views"]) == TRADES
    summary = projection_rebuild()
    assert snapshot(tables_for(summary.to_color)) == incremental

    FIGURES["runs"] += 1
    FIGURES["messages applied"] += ProcessedMessage.objects.count()
    FIGURES["trades"] += TRADES
    record_figures("bus worker kills", {**FIGURES, "last seed": SEED})
