"""Read-your-writes waits are woken by the writer's NOTIFY, not by polling: a waiter checks the database
at once, then only when its escrow is announced (or, as a safety net, every 0.1 s)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from apps.outbox import waiting
from apps.outbox.models import SubscriberCheckpoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]


def _counting(check: Callable[[], bool]) -> tuple[Callable[[], bool], list[int]]:
    calls: list[int] = []

    def counted() -> bool:
        calls.append(1)
        return check()

    return counted, calls


def _marker_exists(name: str) -> Callable[[], bool]:
    # Any committed row will do as "the read model shows it": a checkpoint row is the smallest.
    return lambda: SubscriberCheckpoint.objects.filter(subscriber=name).exists()


def _commit_later(name: str, escrow_id: str, *, after: float, announce: bool = True) -> threading.Thread:
    def write() -> None:
        time.sleep(after)
        try:
            with transaction.atomic():
                SubscriberCheckpoint.objects.create(subscriber=name)
                if announce:
                    waiting.announce(escrow_id)
        finally:
            connection.close()

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_waiter_wakes_on_the_announcement_without_polling() -> None:
    escrow_id, name = str(uuid.uuid4()), f"marker-{uuid.uuid4().hex[:8]}"
    check, calls = _counting(_marker_exists(name))
    writer = _commit_later(name, escrow_id, after=0.5)
    started = time.monotonic()
    assert waiting.wait_for(escrow_id, check, timeout_seconds=5.0)
    elapsed = time.monotonic() - started
    writer.join()
    assert elapsed < 5.0
    # Polling every 5 ms would have checked ~100 times in 0.5 s; the safety slice allows ~5, plus the
    # first check and the one the announcement causes.
    assert len(calls) <= 10, len(calls)


def test_announcing_another_escrow_does_not_end_the_wait() -> None:
    name = f"marker-{uuid.uuid4().hex[:8]}"
    writer = _commit_later(name, str(uuid.uuid4()), after=0.0)
    writer.join()
    other = str(uuid.uuid4())
    check, calls = _counting(lambda: False)
    assert not waiting.wait_for(other, check, timeout_seconds=0.5)
    assert 2 <= len(calls) <= 10, len(calls)


def test_a_rolled_back_write_announces_nothing_and_the_wait_times_out() -> None:
    escrow_id, name = str(uuid.uuid4()), f"marker-{uuid.uuid4().hex[:8]}"

    def write_and_roll_back() -> None:
        time.sleep(0.2)
        try:
            with transaction.atomic():
                SubscriberCheckpoint.objects.create(subscriber=name)
                waiting.announce(escrow_id)
                transaction.set_rollback(True)
        finally:
            connection.close()

    thread = threading.Thread(target=write_and_roll_back)
    thread.start()
    assert not waiting.wait_for(escrow_id, _marker_exists(name), timeout_seconds=1.0)
    thread.join()


def test_a_lost_listener_connection_degrades_to_the_safety_slice_then_restarts() -> None:
    escrow_id, name = str(uuid.uuid4()), f"marker-{uuid.uuid4().hex[:8]}"
    assert waiting.wait_for(escrow_id, lambda: True, timeout_seconds=1.0)  # starts the listener
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE query LIKE 'LISTEN escrow_changed%%' AND datname = current_database()")
        assert cursor.rowcount == 1
    # This wait may still meet the dying listener: the safety slice finds the commit anyway.
    writer = _commit_later(name, escrow_id, after=0.3, announce=False)
    assert waiting.wait_for(escrow_id, _marker_exists(name), timeout_seconds=5.0)
    writer.join()
    # And a later wait gets a new listener that hears announcements again.
    deadline = time.monotonic() + 5.0
    while waiting._Listener.for_process() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    second = f"marker-{uuid.uuid4().hex[:8]}"
    check, calls = _counting(_marker_exists(second))
    writer = _commit_later(second, escrow_id, after=0.5)
    assert waiting.wait_for(escrow_id, check, timeout_seconds=5.0)
    writer.join()
    assert len(calls) <= 10, len(calls)
