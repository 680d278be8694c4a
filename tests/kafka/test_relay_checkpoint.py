"""The relay's progress against a real broker: one small UPDATE of its checkpoint per acknowledged batch,
whatever the number of rows, and the outbox rows themselves are never written."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.test.utils import CaptureQueriesContext

from apps.outbox.kafka.relay import OutboxRelay
from apps.outbox.models import OutboxMessage, SubscriberCheckpoint
from apps.outbox.reader import relay_position, unpublished_rows
from tests.kafka.test_relay_batching import seed_interleaved

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def _relay_only(settings) -> None:
    settings.BUS_OUTBOX_SUBSCRIBERS = []  # these synthetic messages are for the relay, not the subscribers


def last_in_delivery_order() -> tuple[int, int] | None:
    return OutboxMessage.objects.order_by("-txid", "-id").values_list("txid", "id").first()


def row_versions() -> dict[int, str]:
    """Each outbox row's xmin: an UPDATE of the row (a new row version) changes it."""
    return dict(OutboxMessage.objects.annotate(version=RawSQL("xmin::text", [])).values_list("id", "version"))


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_each_acknowledged_batch_moves_the_checkpoint_with_one_update_of_one_row(kafka, transactional_db, batch_size):
    seed_interleaved(escrows=10, versions=4)
    outbox, checkpoints = OutboxMessage._meta.db_table, SubscriberCheckpoint._meta.db_table

    # Inside a transaction the relay marks on this connection (no marker thread), so every statement is
    # captured here; the rows were committed before, so the watermark is past them.
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        stats = OutboxRelay(servers=kafka, batch_size=batch_size).run(once=True)

    assert stats.published == 40 and stats.batches == -(-40 // batch_size)
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert len(updates) == stats.batches  # one per batch: 6 batches of 7 rows, or 1 of 40
    assert all(checkpoints in sql and outbox not in sql for sql in updates), updates
    assert relay_position() == last_in_delivery_order()
    assert not unpublished_rows().exists()


@pytest.mark.postgres_only  # xmin: the transaction that wrote each row version
def test_the_pipelined_relay_never_rewrites_an_outbox_row(kafka, transactional_db):
    seed_interleaved(escrows=10, versions=6)
    versions = row_versions()

    stats = OutboxRelay(servers=kafka, batch_size=5, pipeline_depth=3).run(once=True)  # marks on its own thread

    assert stats.published == 60 and relay_position() == last_in_delivery_order()
    assert row_versions() == versions
