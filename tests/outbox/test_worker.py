"""The worker is woken by commits, not by its poll; after a crash (nothing delivered) it catches up."""

from __future__ import annotations

import datetime
import io
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from apps.outbox import bus, messages
from apps.outbox.models import OutboxMessage
from apps.outbox.worker import BusWorker
from apps.projections.models import EscrowView
from proto.escrow import v1 as escrow_v1
from tests.helpers import create_escrow
from tests.outbox.support import Recorder, installed, new_escrow_id, publish_event, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

NEVER_POLLS = 60.0  # far longer than any wait below: a delivery means a wake, not the poll


@contextmanager
def running_worker() -> Iterator[BusWorker]:
    worker = BusWorker(poll_seconds=NEVER_POLLS)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        # Idle: it has made its first pass and is waiting.
        assert wait_until(lambda: worker.passes >= 1)
        yield worker
    finally:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive(), "the worker did not stop"


def test_a_commit_wakes_the_worker_without_waiting_for_the_poll():
    recorder = Recorder("woken")
    with installed(recorder, inline=False), running_worker() as worker:
        passes = worker.passes
        row = publish_event(new_escrow_id(), 1)
        assert wait_until(lambda: [e for _, _, e in recorder.committed] == [row.event_id], timeout=20)
        assert wait_until(lambda: worker.passes > passes)  # counted when the pass ends


@pytest.mark.postgres_only
def test_a_notify_from_another_connection_wakes_the_worker():
    """Another process writes the outbox: only PostgreSQL NOTIFY can tell this worker."""
    recorder = Recorder("notified")
    escrow_id = new_escrow_id()
    message = escrow_v1.EscrowDelivered(escrow_id=escrow_id)
    event_id = uuid.uuid4()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with installed(recorder, inline=False), running_worker():
        with psycopg.connect(**params) as other:  # its own connection; this process's wake is not called
            other.execute(
                """INSERT INTO outbox_outboxmessage (event_id, topic, key, type, aggregate_id, aggregate_version,
                   payload, occurred_at, correlation_id, causation_id, traceparent)
                   VALUES (%s, %s, %s, %s, %s, 1, %s, %s, '', '', '')""",
                [event_id, messages.topic_for(message), escrow_id, messages.type_name(message), escrow_id,
                 bytes(message), datetime.datetime.now(datetime.UTC)],
            )
            other.execute("SELECT pg_notify(%s, '')", [bus.NOTIFY_CHANNEL])
            other.commit()
        assert not bus._wake_event.is_set()
        assert wait_until(lambda: [e for _, _, e in recorder.committed] == [event_id], timeout=20)


def test_without_a_worker_nothing_is_delivered_and_run_bus_once_catches_up(api_client, buyer, seller):
    as_buyer = api_client(buyer)
    with override_settings(BUS_INLINE_DISPATCH=False):  # the process that would deliver has "crashed"
        ids = [create_escrow(as_buyer, seller=seller, amount=f"{n}.00")["escrow_id"] for n in (10, 20, 30)]
        subs = bus.outbox_subscribers()
        lags = {sub.name: bus.lag(sub) for sub in subs}
        # escrow itself only reacts to payment events, which nothing has produced yet
        assert lags["escrow"] == 0 and all(lags[name] >= 3 for name in ("payments", "projections", "notifications")), lags
        assert not EscrowView.objects.exists()

        out = io.StringIO()
        call_command("run_bus", "--once", "--no-timers", stdout=out)

        assert {sub.name: bus.lag(sub) for sub in subs} == {sub.name: 0 for sub in subs}
        assert "handled" in out.getvalue()
        assert sorted(str(v.escrow_id) for v in EscrowView.objects.all()) == sorted(ids)
        # A second run finds nothing to do.
        call_command("run_bus", "--once", "--no-timers", stdout=io.StringIO())
        assert EscrowView.objects.count() == 3
        assert OutboxMessage.objects.filter(aggregate_id__in=ids).count() > 0
