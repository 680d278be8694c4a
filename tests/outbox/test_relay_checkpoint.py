"""The Kafka relay's checkpoint: a row is published iff it is at or before it in delivery order (txid, id);
it only ever moves forward; and the migration that replaced `published_at` starts it at the end of the
published prefix. (The relay itself against a broker: tests/kafka/test_relay_checkpoint.py.)"""

from __future__ import annotations

import datetime
import importlib
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apps.outbox.kafka.relay import Marker
from apps.outbox.models import RELAY_CHECKPOINT, OutboxMessage
from apps.outbox.reader import (
    advance_relay_checkpoint,
    is_published,
    published_rows,
    relay_position,
    unpublished_rows,
)
from apps.outbox.registry import Subscriber

BEFORE = ("outbox", "0003_outbox_xid_watermark_function")
AFTER = ("outbox", "0004_relay_checkpoint")
migration = importlib.import_module("apps.outbox.migrations.0004_relay_checkpoint")

# ids 1..6 in insertion order, txids chosen so that delivery order (txid, id) is not id order:
# delivery order is ids 1, 3, 2, 4, 6, 5.
TXIDS = [10, 12, 11, 13, 15, 14]


def add_rows(model: type, txids: list[int], published: set[int]) -> list[int]:
    """Outbox rows with the given txids (explicit, so the test decides the delivery order); the rows at
    the positions in `published` (0-based, insertion order) carry `published_at` if the model has it."""
    ids = []
    for position, txid in enumerate(txids):
        fields = {
            "txid": txid,
            "event_id": uuid.uuid4(),
            "topic": "escrow.events.v1",
            "key": "esc-1",
            "type": "escrow.v1.EscrowNeedsAttention",
            "aggregate_id": "esc-1",
            "aggregate_version": position + 1,
            "payload": b"",
            "occurred_at": timezone.now(),
        }
        if position in published:
            fields["published_at"] = timezone.now()
        ids.append(model.objects.create(**fields).id)
    return ids


def test_the_checkpoint_only_moves_forward(transactional_db):
    assert relay_position() == (0, 0)
    assert advance_relay_checkpoint((5, 10))
    # Nothing before it, in delivery order, moves it back: a relay that lost its lease cannot rewind it.
    assert not advance_relay_checkpoint((5, 9))
    assert not advance_relay_checkpoint((4, 100))
    assert not advance_relay_checkpoint((5, 10))
    assert relay_position() == (5, 10)
    assert advance_relay_checkpoint((6, 1))  # a later transaction, a lower id: later in delivery order
    assert relay_position() == (6, 1)


def test_published_means_at_or_before_the_checkpoint_in_delivery_order(transactional_db):
    ids = add_rows(OutboxMessage, TXIDS, published=set())
    assert not published_rows().exists() and unpublished_rows().count() == len(ids)

    advance_relay_checkpoint((12, ids[1]))  # delivery order 1, 3, 2 | 4, 6, 5

    assert set(published_rows().values_list("id", flat=True)) == {ids[0], ids[2], ids[1]}
    assert set(unpublished_rows().values_list("id", flat=True)) == {ids[3], ids[4], ids[5]}
    assert [is_published(row) for row in OutboxMessage.objects.order_by("id")] == [True] * 3 + [False] * 3


@pytest.mark.postgres_only  # the marker writes on a connection of its own, which needs committed rows
def test_the_marker_moves_the_checkpoint_to_the_last_acknowledged_position_never_back(transactional_db):
    relay_position()  # the relay creates the row before it marks anything
    marker = Marker()
    try:
        marker.submit((1, 5))
        marker.submit(None)  # a batch with nothing acknowledged moves nothing
        marker.submit((1, 9))
        marker.drain()
        assert relay_position() == (1, 9)
        marker.submit((1, 3))  # a stale position: ignored
        marker.drain()
        assert relay_position() == (1, 9)
    finally:
        marker.close()


def test_no_subscriber_can_take_the_relays_checkpoint_name():
    with pytest.raises(ValueError, match="relay"):
        Subscriber(name=RELAY_CHECKPOINT, handlers={})


def migrate_to(target: tuple[str, str]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return MigrationExecutor(connection)  # reloaded: the graph knows what is applied now


def test_the_migration_starts_the_checkpoint_at_the_end_of_the_published_prefix(transactional_db):
    try:
        old = migrate_to(BEFORE).loader.project_state([BEFORE]).apps.get_model("outbox", "OutboxMessage")
        prefix_end = migration.published_prefix_end

        assert prefix_end(old.objects.all()) == (0, 0)  # an empty outbox

        # Published: ids 1, 3, 4 and 6 (delivery order 1, 3, | 2, 4, 6, 5): the gap is id 2, so the prefix
        # ends at id 3, although ids 4 and 6 come later and are published too (they are resent).
        ids = add_rows(old, TXIDS, published={0, 2, 3, 5})
        assert prefix_end(old.objects.all()) == (11, ids[2])

        old.objects.filter(id=ids[1]).update(published_at=timezone.now())  # the gap filled: up to id 6
        assert prefix_end(old.objects.all()) == (14, ids[5])
        old.objects.update(published_at=timezone.now())  # all published: the last row in delivery order
        assert prefix_end(old.objects.all()) == (15, ids[4])
        old.objects.update(published_at=None)  # none published: the start
        assert prefix_end(old.objects.all()) == (0, 0)

        old.objects.filter(id__in=[ids[0], ids[2], ids[3], ids[5]]).update(
            published_at=timezone.now() - datetime.timedelta(minutes=1)
        )
        migrate_to(AFTER)

        assert relay_position() == (11, ids[2])
        assert set(unpublished_rows().values_list("id", flat=True)) == {ids[1], ids[3], ids[4], ids[5]}
    finally:
        migrate_to(("outbox", MigrationExecutor(connection).loader.graph.leaf_nodes("outbox")[0][1]))
