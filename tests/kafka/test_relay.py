"""The relay against a real Kafka-protocol broker: topics, keys, order, headers, once-only marking,
leadership, and a broker outage."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from django.db import connection

from apps.outbox import messages
from apps.outbox.kafka.leadership import RelayLease
from apps.outbox.kafka.relay import OutboxRelay, PublishFailed, backlog
from apps.outbox.kafka.replay import replay_outbox, replay_selection
from apps.outbox.models import OutboxMessage
from apps.outbox.reader import is_published, unpublished_rows
from tests.helpers import act, create_escrow, pay, state_of
from tests.kafka.broker import TansuBroker, end_offsets, read_since

pytestmark = pytest.mark.kafka

LIFECYCLE_EVENTS = [
    "EscrowCreated",
    "EscrowAccepted",
    "EscrowFundsHeld",
    "EscrowDelivered",
    "EscrowReleaseRequested",
    "EscrowReleased",
]


def run_lifecycle(as_buyer, as_seller, seller) -> str:
    escrow_id = create_escrow(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert act(as_buyer, escrow_id, "release").status_code == 202
    assert state_of(as_buyer, escrow_id) == "RELEASED"
    return escrow_id


def wait_until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Waits for something another thread does (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def in_thread(relay: OutboxRelay) -> threading.Thread:
    def run() -> None:
        try:
            relay.run()
        finally:
            connection.close()  # the thread's own connection, so the test database can be dropped

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_every_lifecycle_message_arrives_on_its_topic_keyed_by_escrow_in_order_with_headers(
    kafka, api_client, buyer, seller
):
    since = end_offsets(kafka, list(messages.TOPICS))
    escrow_id = run_lifecycle(api_client(buyer), api_client(seller), seller)
    rows = list(OutboxMessage.objects.order_by("txid", "id"))
    assert rows and not any(is_published(row) for row in rows)

    stats = OutboxRelay(servers=kafka).run(once=True)

    assert stats.published == len(rows)
    assert not unpublished_rows().exists()
    records = read_since(kafka, since)
    assert len(records) == len(rows)
    by_event = {dict(r.headers)["event_id"].decode(): r for r in records}
    for row in rows:
        record = by_event[str(row.event_id)]
        assert record.topic == row.topic == messages.topic_for(messages.decode(row.type, row.payload))
        # webhook.events.v1 is keyed by provider payment id; everything else by escrow id
        assert record.key.decode() == row.key
        assert record.key.decode() == (escrow_id if row.topic != messages.WEBHOOK_EVENTS else row.key)
        assert record.value == bytes(row.payload)
        headers = {name: value.decode() for name, value in record.headers}
        assert headers == {
            "event_id": str(row.event_id),
            "type": row.type,
            "aggregate_id": row.aggregate_id,
            "aggregate_version": str(row.aggregate_version),
            "occurred_at": row.occurred_at.isoformat(),
            "correlation_id": row.correlation_id,
            "causation_id": row.causation_id,
            "traceparent": row.traceparent,
        }
        assert headers["traceparent"] and headers["correlation_id"]
    # One key -> one partition per topic, and within it the outbox's delivery order.
    per_partition: dict[tuple[str, int], list[str]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        per_partition[(record.topic, record.partition)].append(dict(record.headers)["event_id"].decode())
    for (topic, _), event_ids in per_partition.items():
        expected = [str(r.event_id) for r in rows if r.topic == topic and str(r.event_id) in set(event_ids)]
        assert event_ids == expected
    escrow_events = [
        dict(r.headers)["type"].decode().rsplit(".", 1)[-1]
        for r in sorted(records, key=lambda r: r.offset)
        if r.topic == messages.ESCROW_EVENTS
    ]
    assert escrow_events == LIFECYCLE_EVENTS

    # Published rows are never sent again by the relay.
    again = end_offsets(kafka, list(messages.TOPICS))
    assert OutboxRelay(servers=kafka).run(once=True).published == 0
    assert read_since(kafka, again) == []


@pytest.mark.postgres_only  # threads writing one SQLite in-memory database lock each other's tables
def test_two_relays_only_the_lock_holder_publishes_and_the_standby_takes_over(kafka, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    first, second = (
        OutboxRelay(servers=kafka, poll_seconds=0.05, standby_seconds=0.05),
        OutboxRelay(servers=kafka, poll_seconds=0.05, standby_seconds=0.05),
    )
    first_thread = in_thread(first)
    wait_until(first.active.is_set, "first relay active")
    second_thread = in_thread(second)
    try:
        run_lifecycle(as_buyer, as_seller, seller)
        wait_until(lambda: backlog().pending == 0, "first relay drained the outbox")
        assert first.stats.published == OutboxMessage.objects.count()
        assert not second.active.is_set() and second.stats.published == 0

        first.stop()
        first_thread.join(30)
        wait_until(second.active.is_set, "standby took over")
        before = OutboxMessage.objects.count()
        run_lifecycle(as_buyer, as_seller, seller)
        wait_until(lambda: backlog().pending == 0, "second relay drained the outbox")
        assert second.stats.published == OutboxMessage.objects.count() - before > 0
    finally:
        first.stop()
        second.stop()
        first_thread.join(30)
        second_thread.join(30)


def test_broker_outage_api_keeps_working_outbox_grows_then_drains_and_replay_restores_lost_data(
    kafka, api_client, buyer, seller
):
    """A broker of its own (memory storage), so stopping it does not disturb other tests."""
    broker = TansuBroker()
    broker.start()
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    try:
        before_outage = run_lifecycle(as_buyer, as_seller, seller)
        assert OutboxRelay(servers=broker.bootstrap).run(once=True).published > 0
        assert backlog().pending == 0

        broker.stop()
        during_outage = run_lifecycle(as_buyer, as_seller, seller)  # the API does not need Kafka
        waiting = backlog()
        assert waiting.pending == OutboxMessage.objects.filter(aggregate_id=during_outage).count() > 0
        assert waiting.oldest_age_seconds >= 0
        down = OutboxRelay(servers=broker.bootstrap)
        with pytest.raises(PublishFailed):
            down.run(once=True)
        assert down.stats.published == 0
        assert backlog().pending == waiting.pending  # nothing marked published while the broker is down

        broker.start()  # same port, empty storage
        assert OutboxRelay(servers=broker.bootstrap).run(once=True).published == waiting.pending
        assert backlog().pending == 0
        arrived = {dict(r.headers)["event_id"].decode() for r in read_since(broker.bootstrap, {})}
        outage_ids = {
            str(e) for e in OutboxMessage.objects.filter(aggregate_id=during_outage).values_list("event_id", flat=True)
        }
        assert arrived == outage_ids

        # The restarted broker lost what it had before: the recovery procedure is a replay.
        lost = {
            str(e) for e in OutboxMessage.objects.filter(aggregate_id=before_outage).values_list("event_id", flat=True)
        }
        since = end_offsets(broker.bootstrap, list(messages.TOPICS))
        replayed = replay_outbox(rows=replay_selection(escrow_id=before_outage), servers=broker.bootstrap)
        assert replayed.published == len(lost)
        assert {dict(r.headers)["event_id"].decode() for r in read_since(broker.bootstrap, since)} == lost
    finally:
        broker.stop()


def test_relay_lease_is_exclusive_until_released(transactional_db):
    first, second = RelayLease(), RelayLease()
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()
    finally:
        first.release()
        second.release()


def test_pipelined_small_batches_publish_every_row_once_in_delivery_order(kafka, api_client, buyer, seller):
    """Many batches in flight at once (batch size 2, three deep) keep per-key order and mark every row."""
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    since = end_offsets(kafka, list(messages.TOPICS))
    run_lifecycle(as_buyer, as_seller, seller)
    run_lifecycle(as_buyer, as_seller, seller)
    rows = list(OutboxMessage.objects.order_by("txid", "id"))

    stats = OutboxRelay(servers=kafka, batch_size=2, pipeline_depth=3).run(once=True)

    assert stats.published == len(rows) and stats.batches == -(-len(rows) // 2)
    assert not unpublished_rows().exists()
    records = read_since(kafka, since)
    assert sorted(dict(r.headers)["event_id"].decode() for r in records) == sorted(str(r.event_id) for r in rows)
    by_key: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        by_key[(record.topic, record.key)].append(dict(record.headers)["event_id"].decode())
    for (topic, key), event_ids in by_key.items():
        assert event_ids == [str(r.event_id) for r in rows if r.topic == topic and r.key.encode() == key]
