"""`batched_appends`: the rows a transaction appends are written in one statement, in order, with the
transaction's NOTIFY; nothing is written when the block fails."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.outbox import wakeup
from apps.outbox.models import OutboxMessage
from apps.outbox.publish import batched_appends, stream_lock
from proto.escrow import v1 as escrow_v1
from tests.helpers import create_escrow
from tests.outbox.support import append_event, new_escrow_id

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_inline_bus(settings):
    """The events here stand alone (no escrow behind them): nobody delivers them."""
    settings.BUS_INLINE_DISPATCH = False


EVENTS = (escrow_v1.EscrowCreated, escrow_v1.EscrowAccepted, escrow_v1.EscrowDelivered)


def _inserts(captured: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].replace('"', "").startswith("INSERT INTO outbox_outboxmessage")
    ]


@pytest.mark.postgres_only
def test_the_rows_of_a_batch_are_one_insert_carrying_the_notify_in_append_order():
    escrow_id = new_escrow_id()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {wakeup.NOTIFY_CHANNEL}")
        with CaptureQueriesContext(connection) as captured, transaction.atomic(), batched_appends():
            stream_lock(escrow_id)
            for version, cls in enumerate(EVENTS, start=1):
                append_event(escrow_id, version, cls)
            assert not OutboxMessage.objects.filter(aggregate_id=escrow_id).exists()  # not written yet
        assert len(_inserts(captured)) == 1
        assert not [q for q in captured.captured_queries if q["sql"].startswith("SELECT pg_notify")]
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == [wakeup.NOTIFY_CHANNEL]
    rows = list(OutboxMessage.objects.filter(aggregate_id=escrow_id).order_by("id"))
    assert [r.aggregate_version for r in rows] == [1, 2, 3]
    assert len({r.txid for r in rows}) == 1 and rows[0].txid > 0


def test_a_batch_whose_block_fails_writes_nothing_and_the_transaction_goes_on():
    escrow_id = new_escrow_id()
    with transaction.atomic():
        stream_lock(escrow_id)
        with pytest.raises(RuntimeError), transaction.atomic(), batched_appends():
            append_event(escrow_id, 1, escrow_v1.EscrowCreated)
            raise RuntimeError("the handler failed")
        append_event(escrow_id, 1, escrow_v1.EscrowCreated)  # outside the batch: written at once
    assert list(OutboxMessage.objects.filter(aggregate_id=escrow_id).values_list("aggregate_version", flat=True)) == [1]


def test_nested_batches_are_written_once_by_the_outermost():
    escrow_id = new_escrow_id()
    with CaptureQueriesContext(connection) as captured, transaction.atomic(), batched_appends():
        stream_lock(escrow_id)
        append_event(escrow_id, 1, escrow_v1.EscrowCreated)
        with batched_appends():
            append_event(escrow_id, 2, escrow_v1.EscrowAccepted)
        assert not OutboxMessage.objects.filter(aggregate_id=escrow_id).exists()
    assert (
        len([q for q in captured.captured_queries if "outbox_outboxmessage" in q["sql"] and "INSERT" in q["sql"]]) == 1
    )
    assert OutboxMessage.objects.filter(aggregate_id=escrow_id).count() == 2


def test_a_batch_needs_a_transaction():
    with pytest.raises(RuntimeError, match="inside the transaction"), batched_appends():
        pass


def test_an_accepted_command_writes_its_outbox_rows_in_one_statement(api_client, buyer, seller):
    """Through the API: the accept's transaction appends the command and its events (at least two rows)
    in one insert (the bus is left out: it runs in the worker)."""
    created = create_escrow(api_client(buyer), seller=seller, accept=False)
    before = OutboxMessage.objects.count()
    with CaptureQueriesContext(connection) as captured:
        response = api_client(seller).post(f"/api/v1/escrows/{created['escrow_id']}/accept", {}, format="json")
    assert response.status_code == 202, response.content
    assert OutboxMessage.objects.count() - before >= 2
    assert len(_inserts(captured)) == 1, captured.captured_queries


def test_a_row_appended_in_a_savepoint_rolled_back_inside_the_batch_is_not_written():
    """As an insert would be: a handler that runs a command in a savepoint of its own, which fails after it
    appended and is caught, leaves no message for the change that was rolled back."""
    escrow_id = new_escrow_id()
    with transaction.atomic(), batched_appends():
        stream_lock(escrow_id)
        append_event(escrow_id, 1, escrow_v1.EscrowCreated)
        try:
            with transaction.atomic(), batched_appends():
                append_event(escrow_id, 2, escrow_v1.EscrowAccepted)
                raise RuntimeError("the command failed after appending")
        except RuntimeError:
            pass
        with transaction.atomic():
            append_event(escrow_id, 2, escrow_v1.EscrowDelivered)  # a savepoint that is released: kept
    written = OutboxMessage.objects.filter(aggregate_id=escrow_id).order_by("id")
    assert [row.type for row in written] == ["escrow.v1.EscrowCreated", "escrow.v1.EscrowDelivered"]
