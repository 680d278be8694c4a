"""The worker is woken by commits, not by its poll; after a crash (nothing delivered) it catches up."""

from __future__ import annotations

import datetime
import io
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from apps.outbox import messages, wakeup
from apps.outbox.drain import drain, worker_draining
from apps.outbox.models import OutboxMessage
from apps.outbox.public import Subscriber, lag, outbox_subscribers, register
from apps.outbox.publish import stream_lock
from apps.outbox.registry import unregister
from apps.outbox.worker import BusWorker, ClockedTick, registered_ticks
from apps.projections.models import EscrowView
from proto.escrow import v1 as escrow_v1
from tests.helpers import create_escrow
from tests.outbox.support import Recorder, append_event, installed, new_escrow_id, publish_event, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

NEVER_POLLS = 60.0  # far longer than any wait below: a delivery means a wake, not the poll


@contextmanager
def running_worker(ticks: list | None = None) -> Iterator[BusWorker]:
    worker = BusWorker(ticks=ticks, poll_seconds=NEVER_POLLS)
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
                [
                    event_id,
                    messages.topic_for(message),
                    escrow_id,
                    messages.type_name(message),
                    escrow_id,
                    bytes(message),
                    datetime.datetime.now(datetime.UTC),
                ],
            )
            other.execute("SELECT pg_notify(%s, '')", [wakeup.NOTIFY_CHANNEL])
            other.commit()
        assert not wakeup.announced()
        assert wait_until(lambda: [e for _, _, e in recorder.committed] == [event_id], timeout=20)


def test_without_a_worker_nothing_is_delivered_and_run_bus_once_catches_up(api_client, buyer, seller):
    as_buyer = api_client(buyer)
    with override_settings(BUS_INLINE_DISPATCH=False):  # the process that would deliver has "crashed"
        ids = [create_escrow(as_buyer, seller=seller, amount=f"{n}.00")["escrow_id"] for n in (10, 20, 30)]
        subs = outbox_subscribers()
        lags = {sub.name: lag(sub) for sub in subs}
        # escrow itself only reacts to payment events, which nothing has produced yet
        assert lags["escrow"] == 0 and all(lags[name] >= 3 for name in ("payments", "projections", "notifications")), (
            lags
        )
        assert not EscrowView.objects.exists()

        out = io.StringIO()
        call_command("run_bus", "--once", "--no-timers", stdout=out)

        assert {sub.name: lag(sub) for sub in subs} == {sub.name: 0 for sub in subs}
        assert "handled" in out.getvalue()
        assert sorted(str(v.escrow_id) for v in EscrowView.objects.all()) == sorted(ids)
        # A second run finds nothing to do.
        call_command("run_bus", "--once", "--no-timers", stdout=io.StringIO())
        assert EscrowView.objects.count() == 3
        assert OutboxMessage.objects.filter(aggregate_id__in=ids).count() > 0


@pytest.mark.postgres_only
def test_an_announcement_left_from_before_the_worker_started_costs_no_pass():
    """A worker stopped in the middle of a pass leaves its stop() announcement set; the next worker's first
    pass reads everything anyway, so that announcement must not cost it a second, empty pass."""
    wakeup.announce()
    with running_worker() as worker:
        time.sleep(0.5)  # a pass it was woken for would have happened by now (the poll is 60 s away)
        assert worker.passes == 1


def test_the_workers_own_commits_do_not_wake_it_again():
    """A handler that appends to the outbox commits inside the worker's pass: the pass's drain loop
    reads past that row itself, so neither its NOTIFY nor its in-process wake may cost another pass."""
    followed: list[uuid.UUID] = []

    def on_created(message, delivery):
        stream_lock(delivery.aggregate_id)
        append_event(delivery.aggregate_id, delivery.aggregate_version + 1, escrow_v1.EscrowDelivered)

    def on_delivered(message, delivery):
        transaction.on_commit(lambda: followed.append(delivery.event_id))

    chained = Subscriber(
        name="chained", handlers={escrow_v1.EscrowCreated: on_created, escrow_v1.EscrowDelivered: on_delivered}
    )
    register(chained)
    try:
        with (
            override_settings(BUS_OUTBOX_SUBSCRIBERS=["chained"], BUS_INLINE_DISPATCH=False),
            running_worker() as worker,
        ):
            passes, retries = worker.passes, worker.held_back_retries
            publish_event(new_escrow_id(), 1, escrow_v1.EscrowCreated)
            assert wait_until(lambda: len(followed) == 1, timeout=20)
            time.sleep(1.0)  # any extra pass would have happened by now (the poll is 60 s away)
            # One pass for the published event, at most one more if its in-process wake and its NOTIFY
            # were seen on either side of the pass's start; the chained row and its announcements, none.
            # (Not counted: passes that came back for rows another session's open transaction held back,
            # which the cluster-wide transaction ids let any other work on the server cause.)
            extra = worker.passes - passes - (worker.held_back_retries - retries)
            assert extra <= 2, extra
            assert len(followed) == 1
    finally:
        unregister("chained")


@pytest.mark.postgres_only
def test_a_pass_skips_subscribers_with_nothing_after_their_checkpoint():
    first, second = Recorder("caught-up"), Recorder("behind")
    with installed(first, second):
        publish_event(new_escrow_id(), 1)
        drain(["caught-up"])
        with CaptureQueriesContext(connection) as captured, worker_draining():  # as run_bus drains
            assert drain() == 1
        locks = [q["sql"] for q in captured.captured_queries if "pg_try_advisory_lock" in q["sql"]]
        assert len(locks) == 1, locks  # one statement takes the drain locks, and one read serves them
        reads = [q["sql"] for q in captured.captured_queries if q["sql"].startswith('SELECT "outbox_outboxmessage"')]
        assert len(reads) == 1, reads  # the worker does not repeat a read that reached the end of the outbox
        with CaptureQueriesContext(connection) as idle:
            assert drain() == 0
        assert len(idle.captured_queries) == 1, [q["sql"] for q in idle.captured_queries]  # the probe


def test_clocked_ticks_run_once_per_poll_interval_and_the_others_after_every_pass():
    """Timers and reminders fall due with time: a worker running on its own looks for them once per poll
    interval, not after each of its passes; what a pass owes (DMs, webhooks) is sent after every pass.
    `run_once` (scripts, cron, tests) runs every tick."""
    runs = {"clocked": 0, "every pass": 0}

    def counting(name):
        def tick():
            runs[name] += 1
            return 0

        return tick

    recorder = Recorder("ticked")
    with installed(recorder, inline=False):
        clocked, every_pass = ClockedTick(counting("clocked")), counting("every pass")
        with running_worker(ticks=[clocked, every_pass]) as worker:
            for version in (1, 2, 3):
                before = worker.passes
                publish_event(new_escrow_id(), version)
                assert wait_until(lambda before=before: worker.passes > before, timeout=20)
            assert worker.passes >= 4
            assert runs["every pass"] >= worker.passes
            assert runs["clocked"] == 1  # its first pass; the poll interval (60 s) has not passed since
        worker.run_once()
        worker.run_once()
        assert runs["clocked"] == 3


def test_the_registered_time_based_ticks_are_clocked():
    from apps.escrow.public import fire_due_timers
    from apps.notifications.public import deliver_due_notifications, send_due_reminders

    ticks = registered_ticks()
    clocked = {tick.tick for tick in ticks if isinstance(tick, ClockedTick)}
    assert {fire_due_timers, send_due_reminders} <= clocked
    assert deliver_due_notifications in ticks and deliver_due_notifications not in clocked
    # each worker gets clocks of its own
    assert not {id(tick) for tick in ticks if isinstance(tick, ClockedTick)} & {
        id(tick) for tick in registered_ticks() if isinstance(tick, ClockedTick)
    }


@pytest.mark.postgres_only
def test_rows_held_back_by_an_older_open_transaction_are_delivered_without_waiting_for_the_poll():
    """A drain leaves rows behind an older transaction still open (commit order: apps.outbox.reader) after
    a bounded wait. That transaction may write no outbox row, so its end wakes nobody: the worker comes
    back for the rows by itself, well before its poll interval."""
    recorder = Recorder("held-back")
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with installed(recorder, inline=False), running_worker() as worker:
        with psycopg.connect(**params) as other:
            other.execute("SELECT txid_current()")  # an open transaction holding an xid older than the row's
            retries = worker.held_back_retries
            row = publish_event(new_escrow_id(), 1)
            # its pass gave up waiting for the row, and it will come back for it
            assert wait_until(lambda: worker.held_back_retries > retries, timeout=20)
            assert recorder.committed == []
            other.commit()  # ends without writing to the outbox: no NOTIFY
        assert wait_until(lambda: [e for _, _, e in recorder.committed] == [row.event_id], timeout=20)
