"""Commit order on PostgreSQL, with real concurrent connections.

A reader that polls `id > checkpoint` skips a row whose transaction took its id first and committed
last. The bus reads only below the xid watermark, in (txid, id) order; these tests prove it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from apps.outbox.drain import drain, drain_subscriber
from apps.outbox.models import OutboxMessage, SubscriberCheckpoint
from apps.outbox.public import lag
from apps.outbox.publish import stream_lock
from tests.outbox.support import Recorder, append_event, installed, new_escrow_id, wait_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def _in_thread(target: Callable[[], Any]) -> threading.Thread:
    """Runs `target` on its own thread, hence its own Django (database) connection."""

    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_drain_never_passes_an_open_transaction_that_wrote_first():
    recorder = Recorder("order-probe")
    early, late = new_escrow_id(), new_escrow_id()
    inserted, release = threading.Event(), threading.Event()
    early_row: dict[str, OutboxMessage] = {}

    def slow_writer() -> None:
        with transaction.atomic():
            early_row["row"] = append_event(early, 1)
            inserted.set()
            assert release.wait(30), "the test never released the slow writer"

    with installed(recorder) as (sub,):
        # Given T1 has inserted its row (the lower id) and is still open...
        writer = _in_thread(slow_writer)
        assert inserted.wait(30)
        # ...when T2 inserts a later row and commits first,
        with transaction.atomic():
            late_row = append_event(late, 1)
        assert early_row["row"].id < late_row.id

        # then a naive `id > checkpoint` reader would read T2's row now and move its checkpoint past T1's:
        naive_batch = list(OutboxMessage.objects.filter(id__gt=0).order_by("id").values_list("id", flat=True))
        assert naive_batch == [late_row.id]
        naive_checkpoint = naive_batch[-1]

        # while the bus delivers nothing and keeps its checkpoint where it was.
        assert drain_subscriber(sub) == 0
        assert recorder.committed == []
        checkpoint = SubscriberCheckpoint.objects.get(subscriber=sub.name)
        assert (checkpoint.last_txid, checkpoint.last_id) == (0, 0)
        assert lag(sub) == 1  # T2's row is committed and waiting; T1's is not visible yet

        # When T1 commits,
        release.set()
        writer.join(30)
        assert not writer.is_alive()

        # the naive reader's next batch (`id > its checkpoint`) would never see T1's row: skipped forever,
        assert not OutboxMessage.objects.filter(id__gt=naive_checkpoint, pk=early_row["row"].pk).exists()
        # but the bus delivers both, T1's first: delivery order is commit-safe (txid, id) order.
        assert wait_until(lambda: len(recorder.committed) == 2, step=lambda: drain_subscriber(sub))
        assert [event_id for _, _, event_id in recorder.committed] == [early_row["row"].event_id, late_row.event_id]
        rows = {r.event_id: r for r in OutboxMessage.objects.all()}
        assert rows[early_row["row"].event_id].txid < rows[late_row.event_id].txid
        assert lag(sub) == 0
        assert recorder.effects() == 2


def test_each_subscriber_sees_each_escrows_events_in_version_order_under_concurrent_writers():
    first, second = Recorder("order-a"), Recorder("order-b")
    escrows = [new_escrow_id() for _ in range(4)]
    writers, per_writer = 6, 10  # each writer appends 10 events, spread over the 4 escrows
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(worker: int) -> None:
        try:
            start.wait(30)
            for n in range(per_writer):
                escrow_id = escrows[(worker + n) % len(escrows)]
                # The way the escrow service writes: stream lock first, then read the version under it.
                with transaction.atomic():
                    stream_lock(escrow_id)
                    last = OutboxMessage.objects.filter(aggregate_id=escrow_id).order_by("-aggregate_version").first()
                    append_event(escrow_id, (last.aggregate_version if last else 0) + 1)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    # Inline dispatch on: every writer drains after its commit, so drains race writers and each other.
    with installed(first, second, inline=True) as subs:
        threads = [_in_thread(lambda w=w: write(w)) for w in range(writers)]
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert OutboxMessage.objects.count() == writers * per_writer

        total = writers * per_writer
        assert wait_until(
            lambda: all(len(r.committed) == total for r in (first, second)),
            step=lambda: drain([s.name for s in subs]),
        )

    for recorder in (first, second):
        by_escrow = recorder.versions_by_escrow()
        assert set(by_escrow) == set(escrows)
        for escrow_id, versions in by_escrow.items():
            expected = OutboxMessage.objects.filter(aggregate_id=escrow_id).count()
            assert versions == list(range(1, expected + 1)), (recorder.name, escrow_id, versions)
        assert len({event_id for _, _, event_id in recorder.committed}) == total  # none twice
        assert recorder.effects() == total
