"""A subscriber applies a run of messages in one transaction (one dedupe read and insert, one checkpoint
write), without changing what one-by-one delivery guarantees: each effect once, retries counted per
message, a poison message dead-lettered alone, and per-stream order in the outbox it writes to."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from apps.outbox.drain import drain_subscriber
from apps.outbox.models import DeadLetter, OutboxMessage, ProcessedMessage
from apps.outbox.public import Delivery, Subscriber, lag, register
from apps.outbox.publish import outbox_append, stream_lock
from apps.outbox.registry import unregister
from proto.escrow import v1 as escrow_v1
from tests.outbox.support import Recorder, installed, new_escrow_id, publish_event, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FAST_RETRIES = {"BUS_RETRY_BASE_SECONDS": 0.001, "BUS_MAX_ATTEMPTS": 3}


def drain_until(sub: Subscriber, expected: int) -> int:
    """Drains until `expected` messages were handled, and returns how many passes that took. On a
    shared PostgreSQL server an unrelated open transaction (autovacuum, say) can hold the xid watermark
    back past a drain's wait; delivery is then delayed, never skipped."""
    handled = passes = 0

    def step() -> None:
        nonlocal handled, passes
        handled += drain_subscriber(sub)
        passes += 1

    step()
    assert wait_until(lambda: handled >= expected, step=step)
    assert handled == expected
    return passes


def test_a_run_of_messages_is_applied_with_a_handful_of_queries_not_a_few_per_message():
    recorder = Recorder("batched")
    escrows = [new_escrow_id() for _ in range(20)]
    with installed(recorder, BUS_APPLY_BATCH_SIZE=50) as (sub,):
        published = [publish_event(escrow_id, 1) for escrow_id in escrows]
        with CaptureQueriesContext(connection) as queries:
            passes = drain_until(sub, 20)
        # One effect per message (the recorder's own UPDATE), plus a constant number for the run
        # (14 here: drain lock and unlock, checkpoint created, outbox reads, BEGIN, dedupe read and insert,
        # checkpoint write, COMMIT). One transaction per message took five more statements each.
        effects = [q for q in queries.captured_queries if "effects:batched" in q["sql"]]
        assert len(effects) == 20
        assert len(queries.captured_queries) - len(effects) <= 16 + 8 * (passes - 1)
        assert recorder.effects() == 20
        assert [e for _, _, e in recorder.committed] == [row.event_id for row in published]
        assert ProcessedMessage.objects.filter(subscriber=sub.name).count() == 20
        assert lag(sub) == 0


def test_a_run_is_cut_at_the_batch_size():
    recorder = Recorder("small-batches")
    with installed(recorder, BUS_APPLY_BATCH_SIZE=3) as (sub,):
        for _ in range(7):
            publish_event(new_escrow_id(), 1)
        with CaptureQueriesContext(connection) as queries:
            drain_until(sub, 7)
        inserts = [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "outbox_processedmessage"')]
        assert len(inserts) == 3  # 3 + 3 + 1
        assert recorder.effects() == 7


def test_a_poison_message_inside_a_run_is_retried_alone_and_the_others_apply_once():
    recorder = Recorder("poison-in-run")
    with installed(recorder, **FAST_RETRIES) as (sub,):
        rows = [publish_event(new_escrow_id(), 1) for _ in range(5)]
        poison = rows[2]
        recorder.failing.add(poison.event_id)

        drain_until(sub, 4)

        # The batch's failing attempt counts as the first of three, as if applied one by one.
        assert recorder.calls[poison.event_id] == 3
        letter = DeadLetter.objects.get(subscriber=sub.name)
        assert letter.event_id == poison.event_id and letter.attempts == 3
        others = [row.event_id for row in rows if row.event_id != poison.event_id]
        assert [e for _, _, e in recorder.committed] == others
        assert recorder.effects() == 4  # no effect of the rolled-back batch survived
        assert set(ProcessedMessage.objects.filter(subscriber=sub.name).values_list("event_id", flat=True)) == set(
            others
        )
        assert lag(sub) == 0


def _appending_subscriber(
    name: str,
    *,
    appends_to_outbox: bool,
    before: Callable[[str], None] | None = None,
    writes_its_own_table: bool = True,
) -> Subscriber:
    """A subscriber that reacts to EscrowCreated by appending an EscrowDisputed to the same escrow's
    stream, the way escrow and payments handlers write (stream lock, a write of its own, then the
    outbox, whose rows `batched_appends` writes when the run ends)."""

    def handle(message: Any, delivery: Delivery) -> None:
        if before is not None:
            before(delivery.aggregate_id)
        stream_lock(delivery.aggregate_id)
        if writes_its_own_table and connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # as a write to its own table would: the transaction has an id
                cursor.execute("SELECT pg_current_xact_id()")
        outbox_append(
            message=escrow_v1.EscrowDisputed(escrow_id=delivery.aggregate_id),
            aggregate_id=delivery.aggregate_id,
            aggregate_version=delivery.aggregate_version + 1,
        )

    return Subscriber(name=name, handlers={escrow_v1.EscrowCreated: handle}, appends_to_outbox=appends_to_outbox)


def _only(sub: Subscriber, **overrides: Any) -> override_settings:
    return override_settings(BUS_OUTBOX_SUBSCRIBERS=[sub.name], BUS_INLINE_DISPATCH=False, **overrides)


def _stream(escrow_id: str) -> list[str]:
    return list(
        OutboxMessage.objects.filter(aggregate_id=escrow_id).order_by("txid", "id").values_list("type", flat=True)
    )


@pytest.mark.parametrize(
    ("appends_to_outbox", "writes_its_own_table"),
    [(True, True), (False, True), (False, False)],
    ids=["streams-locked-up-front", "undeclared", "undeclared-outbox-only"],
)
def test_a_batch_that_appends_to_the_outbox_applies_each_message_once(appends_to_outbox, writes_its_own_table, caplog):
    sub = _appending_subscriber(
        f"appender-{appends_to_outbox}-{writes_its_own_table}",
        appends_to_outbox=appends_to_outbox,
        writes_its_own_table=writes_its_own_table,
    )
    escrows = [new_escrow_id() for _ in range(4)]
    register(sub)
    try:
        with _only(sub, **FAST_RETRIES):
            for escrow_id in escrows:
                publish_event(escrow_id, 1, escrow_v1.EscrowCreated)
            with caplog.at_level("INFO", logger="apps.outbox.drain"):
                drain_until(sub, 4)
    finally:
        unregister(sub.name)
    for escrow_id in escrows:
        assert _stream(escrow_id) == ["escrow.v1.EscrowCreated", "escrow.v1.EscrowDisputed"]
    assert not DeadLetter.objects.filter(subscriber=sub.name).exists()
    rolled_back = [r for r in caplog.records if r.getMessage() == "bus batch rolled back"]
    if appends_to_outbox or not writes_its_own_table or connection.vendor != "postgresql":
        # Locked up front; or nothing written before the run ends (its outbox rows are written then), so
        # a stream lock taken in the middle of the run is still taken before the transaction's first write.
        assert rolled_back == []
    else:
        # The undeclared subscriber's batch may take a stream lock only before its first write: the
        # second message needs its own transaction, and none of this counts as a handler failure.
        assert rolled_back and all("StreamLockedTooLate" in r.error for r in rolled_back)
        assert not [r for r in caplog.records if r.getMessage() == "bus handler failed, will retry"]


@pytest.mark.postgres_only
@pytest.mark.parametrize("appends_to_outbox", [True, False], ids=["streams-locked-up-front", "undeclared"])
def test_a_writer_on_a_stream_the_batch_will_write_commits_after_it_in_the_streams_order(appends_to_outbox):
    """The batch has written for escrow A (its transaction id is assigned) when another transaction
    tries to write on escrow B, which the batch writes next. If that writer went first, it would commit
    first yet sort after the batch's older transaction id: stream B would be delivered out of order.
    The batch therefore holds B's stream lock from its start (or, undeclared, writes B in a
    transaction of its own), and the writer's row sorts where it commits."""
    first, second = new_escrow_id(), new_escrow_id()
    writer_started = threading.Event()
    writer_done = threading.Event()
    commits: list[str] = []

    def writer() -> None:
        try:
            with transaction.atomic():
                stream_lock(second)
                outbox_append(
                    message=escrow_v1.EscrowDelivered(escrow_id=second), aggregate_id=second, aggregate_version=9
                )
            commits.append("escrow.v1.EscrowDelivered")
        finally:
            connection.close()
            writer_done.set()

    def before(aggregate_id: str) -> None:
        if aggregate_id == first and not writer_started.is_set():
            # Write something first, so that this transaction has its id before the writer runs.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_xact_id()")
            writer_started.set()
            threading.Thread(target=writer, daemon=True).start()
            writer_done.wait(1.0)  # it finishes only if nothing stops it
        if aggregate_id == second:
            transaction.on_commit(lambda: commits.append("escrow.v1.EscrowDisputed"))

    sub = _appending_subscriber(f"ordered-{appends_to_outbox}", appends_to_outbox=appends_to_outbox, before=before)
    register(sub)
    try:
        with _only(sub, **FAST_RETRIES):
            publish_event(first, 1, escrow_v1.EscrowCreated)
            publish_event(second, 1, escrow_v1.EscrowCreated)
            drain_until(sub, 2)
            assert writer_done.wait(10)
    finally:
        unregister(sub.name)

    rows = list(OutboxMessage.objects.filter(aggregate_id=second).order_by("txid", "id"))
    assert rows[0].type == "escrow.v1.EscrowCreated"
    # The stream's delivery order, (txid, id), is the order in which its writers committed.
    assert [r.type for r in rows[1:]] == commits
    if appends_to_outbox:
        # The writer waited for the stream lock the batch took up front.
        assert commits == ["escrow.v1.EscrowDisputed", "escrow.v1.EscrowDelivered"]
    else:
        # The batch gave B up; B's message was applied in a later transaction, after the writer's.
        assert commits == ["escrow.v1.EscrowDelivered", "escrow.v1.EscrowDisputed"]
