"""Subscribers drained together apply a run of messages in ONE transaction, a savepoint each: one
subscriber's failing handler is rolled back alone (and retried or dead-lettered exactly as one by one)
while the others commit, each subscriber's checkpoint and dedupe records are written in that
transaction, and a crash in the middle leaves every subscriber either fully applied or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import betterproto2
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.outbox.drain import drain, worker_draining
from apps.outbox.models import DeadLetter, ProcessedMessage, SubscriberCheckpoint
from apps.outbox.outage import DatabaseUnavailable
from apps.outbox.public import Delivery, lag, outbox_subscribers, subscriber_checkpoint
from tests.helpers import accept_escrow, act, create_escrow, pay
from tests.outbox.support import Recorder, installed, new_escrow_id, publish_event, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FAST_RETRIES = {"BUS_RETRY_BASE_SECONDS": 0.001, "BUS_MAX_ATTEMPTS": 3}
PROBE = "/* txid probe */"
BEGIN = ("BEGIN", "BEGIN IMMEDIATE")  # SQLite's writers begin IMMEDIATE


class TxRecorder(Recorder):
    """A recorder that also notes the database transaction each of its handler calls ran in, and can be
    told to run something in the middle of a message (`during`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.transactions: dict[uuid.UUID, int] = {}
        self.during: dict[uuid.UUID, Callable[[], Any]] = {}

    def handle(self, message: betterproto2.Message, delivery: Delivery) -> None:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT pg_current_xact_id()::text::bigint {PROBE}")
                self.transactions[delivery.event_id] = cursor.fetchone()[0]
        super().handle(message, delivery)
        if delivery.event_id in self.during:
            self.during[delivery.event_id]()


def _is_effect(sql: str) -> bool:
    return sql.startswith("UPDATE") and "effects:" in sql


def _transactions_with_effects(queries: list[dict[str, Any]]) -> int:
    """How many transactions (BEGIN .. COMMIT) ran a recorder's effect."""
    count, inside, counted = 0, False, False
    for query in queries:
        sql = query["sql"]
        if sql in BEGIN:
            inside, counted = True, False
        elif sql in ("COMMIT", "ROLLBACK"):
            inside = False
        elif inside and _is_effect(sql) and not counted:
            count, counted = count + 1, True
    return count


def _drain_until(names: list[str], done: Callable[[], bool]) -> int:
    """Drains until `done()`, returning the passes it took: an unrelated open transaction on a shared
    server can hold the xid watermark back for a moment (delivery is delayed, never skipped)."""
    passes = 0

    def step() -> None:
        nonlocal passes
        drain(names)
        passes += 1

    step()
    assert wait_until(done, step=step)
    return passes


def test_a_run_for_several_subscribers_is_one_transaction_with_a_handful_of_statements():
    recorders = [TxRecorder(f"shared-{n}") for n in range(3)]
    with installed(*recorders, BUS_APPLY_BATCH_SIZE=50) as subs:
        names = [sub.name for sub in subs]
        for name in names:
            subscriber_checkpoint(name)
        published = [publish_event(new_escrow_id(), 1) for _ in range(20)]
        with CaptureQueriesContext(connection) as captured:
            passes = _drain_until(names, lambda: all(r.effects() == 20 for r in recorders))
        queries = [q for q in captured.captured_queries if PROBE not in q["sql"]]
        effects = [q for q in queries if _is_effect(q["sql"])]
        assert len(effects) == 60  # one per message per subscriber
        # All 60 handler calls ran in one database transaction (PostgreSQL names it; on SQLite the
        # statements below show it)...
        if connection.vendor == "postgresql":
            assert len({txid for r in recorders for txid in r.transactions.values()}) == 1
        assert _transactions_with_effects(queries) == 1
        # ...with, beside the effects, 18 statements for the drain: the probe (twice: the second finds nothing),
        # the three drain locks taken and let go in one statement each, one checkpoint read and one outbox read
        # for the three, the one transaction (BEGIN, one dedupe read, SAVEPOINT and RELEASE per subscriber,
        # one dedupe insert, one checkpoint write, COMMIT) and a last outbox read. Draining the three one
        # after another, a transaction each, took 32 statements.
        drained = [q["sql"] for q in queries if "effects:" not in q["sql"]]  # not the test's own reads either
        assert len(drained) <= 18 + 8 * (passes - 1), drained
        assert sum(drained.count(begin) for begin in BEGIN) == passes
        for recorder in recorders:
            assert [e for _, _, e in recorder.committed] == [row.event_id for row in published]
            assert set(recorder.calls.values()) == {1}
        assert ProcessedMessage.objects.filter(subscriber__in=names).count() == 60
        assert all(lag(sub) == 0 for sub in subs)


def test_one_failing_subscriber_is_rolled_back_alone_and_the_others_commit_in_the_shared_transaction():
    first, failing, last = TxRecorder("alone-a"), TxRecorder("alone-b"), TxRecorder("alone-c")
    with installed(first, failing, last, **FAST_RETRIES) as subs:
        names = [sub.name for sub in subs]
        rows = [publish_event(new_escrow_id(), 1) for _ in range(5)]
        poison = rows[2]
        failing.failing.add(poison.event_id)

        _drain_until(names, lambda: all(lag(sub) == 0 for sub in subs))

        # The others: every message once, all in one transaction, checkpoint and dedupe records with them.
        for recorder in (first, last):
            assert recorder.effects() == 5
            assert set(recorder.calls.values()) == {1}
            assert [e for _, _, e in recorder.committed] == [row.event_id for row in rows]
            assert ProcessedMessage.objects.filter(subscriber=recorder.name).count() == 5
        if connection.vendor == "postgresql":  # the transaction's id (SQLite has none to read)
            shared = {first.transactions[r.event_id] for r in rows} | {last.transactions[r.event_id] for r in rows}
            assert len(shared) == 1
        assert not DeadLetter.objects.exclude(subscriber=failing.name).exists()

        # The failing one, exactly as one by one: the rows before the poison applied again after its
        # savepoint rolled back (their first effects went with it), the poison tried three times (the
        # shared run's attempt counted as the first) and dead-lettered, the rows after it applied once.
        assert [failing.calls[r.event_id] for r in rows] == [2, 2, 3, 1, 1]
        letter = DeadLetter.objects.get(subscriber=failing.name)
        assert letter.event_id == poison.event_id and letter.attempts == 3
        others = [r.event_id for r in rows if r.event_id != poison.event_id]
        assert [e for _, _, e in failing.committed] == others
        assert failing.effects() == 4  # nothing of the rolled-back savepoint survived
        assert set(ProcessedMessage.objects.filter(subscriber=failing.name).values_list("event_id", flat=True)) == set(
            others
        )
        assert all(lag(sub) == 0 for sub in subs)


@pytest.mark.postgres_only
def test_a_crash_in_the_middle_of_a_shared_run_leaves_each_subscriber_all_applied_or_not_at_all():
    """The connection dies while the second subscriber is handling the third message: the first
    subscriber's handlers had all run (in the same transaction). Nothing of either may remain, checkpoints
    included; the next drain applies every message once to each."""
    first, second = TxRecorder("crash-a"), TxRecorder("crash-b")
    with installed(first, second) as subs:
        names = [sub.name for sub in subs]
        for name in names:
            subscriber_checkpoint(name)
        rows = [publish_event(new_escrow_id(), 1) for _ in range(5)]

        def crash() -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        second.during[rows[2].event_id] = crash
        with pytest.raises(DatabaseUnavailable):
            drain(names)
        connection.close()
        assert first.calls[rows[-1].event_id] == 1  # the first subscriber had finished its run

        for recorder in (first, second):
            assert recorder.effects() == 0
            assert recorder.committed == []
            assert not ProcessedMessage.objects.filter(subscriber=recorder.name).exists()
            checkpoint = SubscriberCheckpoint.objects.get(subscriber=recorder.name)
            assert (checkpoint.last_txid, checkpoint.last_id) == (0, 0)

        second.during.clear()
        _drain_until(names, lambda: all(lag(sub) == 0 for sub in subs))
        for recorder in (first, second):
            assert recorder.effects() == 5
            assert [e for _, _, e in recorder.committed] == [row.event_id for row in rows]
            assert ProcessedMessage.objects.filter(subscriber=recorder.name).count() == 5
        assert not DeadLetter.objects.exists()


def _bus_cost(step: Callable[[], Any]) -> tuple[int, int]:
    """Runs one command with nobody delivering, then drains as the bus worker does: the statements the
    drain ran, and its database transactions (BEGIN .. COMMIT blocks, and statements run outside one)."""
    step()
    with CaptureQueriesContext(connection) as captured, worker_draining():
        drain()  # once, as a worker's pass does: it leaves nothing behind
    assert all(lag(sub) == 0 for sub in outbox_subscribers())
    statements = transactions = 0
    inside = False
    for query in captured.captured_queries:
        statements += 1
        if query["sql"] == "BEGIN":
            inside, transactions = True, transactions + 1
        elif query["sql"] in ("COMMIT", "ROLLBACK"):
            inside = False
        elif not inside:
            transactions += 1
    return statements, transactions


@pytest.mark.postgres_only
def test_the_real_subscribers_apply_a_trade_in_a_pinned_number_of_statements_and_transactions(
    api_client, buyer, seller, settings
):
    """One trade (create, accept, sandbox pay, deliver, release), the bus drained after each command: the
    four subscribers (and the sandbox's webhooks) in 224 statements and 55 transactions, where one
    transaction per subscriber per run took 299 and 136, and the shared transaction before the batched
    outbox insert and the worker's single drain 241 and 70. No batching across commands helps here, so this
    is the most the bus spends per command; under load a drain covers several commands."""
    settings.BUS_INLINE_DISPATCH = False
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow: dict[str, Any] = {}
    costs = [
        _bus_cost(lambda: escrow.update(create_escrow(as_buyer, seller=seller, accept=False))),
        _bus_cost(lambda: accept_escrow(seller, escrow["escrow_id"])),
        _bus_cost(lambda: pay(as_buyer, escrow["escrow_id"])),
        _bus_cost(lambda: act(as_seller, escrow["escrow_id"], "deliver")),
        _bus_cost(lambda: act(as_buyer, escrow["escrow_id"], "release")),
    ]
    statements, transactions = (sum(cost[i] for cost in costs) for i in (0, 1))
    # A little room: an unrelated open transaction can hold the watermark back and cost a read or two.
    assert statements <= 224 + 10, costs
    assert transactions <= 55 + 10, costs
    assert all(lag(sub) == 0 for sub in outbox_subscribers())
    assert not DeadLetter.objects.exists()
