"""Queries per request, pinned: a new query on these paths (an N+1, a lost select_related, a lookup
that should be cached) fails here before it shows in the benchmark. Counts only, never timings.

The bus is switched off for the measured request (BUS_INLINE_DISPATCH=False and no read-your-writes
wait) so that the count is the request's own work, not the subscribers'.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.helpers import act, create_escrow, pay

# The command transaction of MarkDelivered, statement for statement (bench/run.py's pgbench script
# replays the same list as the database ceiling).
# How each backend opens and ends a transaction (SQLite's writers begin IMMEDIATE).
TRANSACTION_CONTROL = ("BEGIN", "BEGIN IMMEDIATE", "COMMIT")

DELIVER_TRANSACTION = [
    "advisory_xact_lock",  # the escrow's message stream
    'FROM "escrow_escrow"',  # the escrow row, FOR UPDATE on PostgreSQL
    "INTO escrow_processedcommand",  # the command id, for at-most-once: ON CONFLICT DO NOTHING
    'INTO "escrow_escrowevent"',  # the audit row
    'UPDATE "escrow_escrow"',  # the state change
    # EscrowDelivered and the command's own record on the commands topic, in one statement that also
    # wakes the bus worker in other processes (pg_notify)
    "INTO outbox_outboxmessage",
]


def _the_transaction(sql: list[str], expected: list[str]) -> tuple[int, list[str]]:
    """The statements between the first BEGIN and COMMIT, checked one by one against `expected` (a
    fragment each); returns where the transaction began and its statements."""
    begin, commit = sql.index("BEGIN"), sql.index("COMMIT")
    inside = sql[begin + 1 : commit]
    assert len(inside) == len(expected), "\n".join(inside)
    for statement, fragment in zip(inside, expected, strict=True):
        assert fragment in statement, (fragment, statement)
    return begin, inside


@pytest.fixture(autouse=True)
def _cache_outside_the_database(settings):
    """Production keeps the shared cache in Redis (CACHE_URL): the throttle's reads and writes are no SQL
    there. The embedded default's database cache would add them to every count below."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture
def funded(api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    return as_buyer, as_seller, escrow_id


def test_get_escrow_is_one_query(funded, django_assert_num_queries):
    as_buyer, as_seller, escrow_id = funded
    # Authentication reads no table (the token, then revocations from the shared cache); the escrow's view
    # in the live colour is one statement (the blue/green pointer is a subquery of it).
    with django_assert_num_queries(1) as captured:
        answer = as_seller.get(f"/api/v1/escrows/{escrow_id}")
    assert answer.status_code == 200
    assert '"escrow_id" = ' in captured.captured_queries[0]["sql"]
    # A 304 costs the same one read.
    with django_assert_num_queries(1):
        again = as_seller.get(f"/api/v1/escrows/{escrow_id}", HTTP_IF_NONE_MATCH=answer["ETag"])
    assert again.status_code == 304


def test_list_is_one_page_query_whatever_the_number_of_escrows(api_client, buyer, seller, django_assert_num_queries):
    as_buyer = api_client(buyer)
    for _ in range(3):
        create_escrow(as_buyer, seller=seller)
    # generation, count, page, and ONE read of the payment instructions of the page's escrows awaiting
    # funds (it was one per escrow); authentication reads no table
    with django_assert_num_queries(4):
        assert len(as_buyer.get("/api/v1/escrows").json()["results"]) == 3
    create_escrow(as_buyer, seller=seller)
    with django_assert_num_queries(4):
        results = as_buyer.get("/api/v1/escrows").json()["results"]
    assert len(results) == 4
    assert all(r["state"] == "AWAIT_FUNDS" and r["payment"]["provider"] == "sandbox" for r in results)


@pytest.mark.postgres_only
def test_deliver_runs_one_transaction_of_six_statements(funded, settings):
    _, as_seller, escrow_id = funded
    settings.BUS_INLINE_DISPATCH = False
    with CaptureQueriesContext(connection) as captured:
        assert act(as_seller, escrow_id, "deliver").status_code == 202
    sql = [q["sql"] for q in captured.captured_queries]
    begin, inside = _the_transaction(sql, DELIVER_TRANSACTION)
    assert inside[-1].count("'escrow.v1.") == 2 and "pg_notify" in inside[-1]
    # One transaction per command, and nothing before it: authentication reads no table.
    assert sql.count("BEGIN") == 1
    assert begin == 0


def test_notifying_both_parties_of_an_event_is_one_read_and_one_insert(funded, settings):
    from apps.notifications.handlers import SUBSCRIBER
    from apps.notifications.models import Notification
    from apps.outbox import messages
    from apps.outbox.models import OutboxMessage
    from apps.outbox.public import Delivery

    _, as_seller, escrow_id = funded
    settings.BUS_INLINE_DISPATCH = False
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    row = OutboxMessage.objects.get(aggregate_id=escrow_id, type="escrow.v1.EscrowDelivered")
    handler = SUBSCRIBER.handler_for(row.type)
    message = messages.decode(row.type, row.payload)
    with CaptureQueriesContext(connection) as captured, transaction.atomic():  # as in the bus transaction
        handler(message, Delivery.of(row))
    sql = [q["sql"] for q in captured.captured_queries if q["sql"] not in TRANSACTION_CONTROL]
    assert len(sql) == 3, "\n".join(sql)  # the parties, the notifications already owed, one insert
    assert 'FROM "notifications_escrowparties"' in sql[0]
    assert sql[2].startswith('INSERT INTO "notifications_notification"')
    assert Notification.objects.filter(event_id=row.event_id).count() == 2
    # The same event again owes nothing more: two reads, no insert.
    with CaptureQueriesContext(connection) as again, transaction.atomic():
        handler(message, Delivery.of(row))
    assert len([q for q in again.captured_queries if q["sql"] not in TRANSACTION_CONTROL]) == 2
    assert Notification.objects.filter(event_id=row.event_id).count() == 2


def test_a_read_your_writes_wait_reads_the_live_colour_once_not_per_poll(funded, settings):
    from apps.projections import selectors

    _, _, escrow_id = funded
    version = selectors.escrow_view_get(escrow_id=escrow_id).version
    with CaptureQueriesContext(connection) as captured:  # never shown: waits out its 80 ms
        # (under the 0.1 s after which a wait looks at the live colour again, for a flip)
        assert not selectors.escrow_view_wait(escrow_id=escrow_id, version=version + 1, timeout_seconds=0.08)
    sql = [q["sql"] for q in captured.captured_queries]
    colour = [s for s in sql if "projections_activegeneration" in s]
    polls = [s for s in sql if "projections_escrowview" in s]
    assert len(polls) >= 2, sql  # polled more than once (every 5 ms, fewer on a busy machine)...
    assert len(colour) == 1, sql  # ...and read the live colour once


def test_a_read_your_writes_wait_follows_a_colour_flip(funded):
    """A rebuild that flips the live colour during a wait: the wait looks at the new colour within
    0.1 s and sees the escrow there."""
    import threading
    import time

    from apps.projections import selectors
    from apps.projections.models import ActiveGeneration
    from apps.projections.tables import active_tables, other_color, tables_for

    _, _, escrow_id = funded
    live = active_tables()
    view = live.view.objects.get(escrow_id=escrow_id)
    target = tables_for(other_color(live.color))
    fields = {f.attname: getattr(view, f.attname) for f in live.view._meta.concrete_fields}
    target.view.objects.create(**{**fields, "version": view.version + 1})

    def flip() -> None:
        time.sleep(0.2)
        ActiveGeneration.objects.update_or_create(name="escrows", defaults={"color": target.color})

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        assert selectors.escrow_view_wait(escrow_id=escrow_id, version=view.version + 1, timeout_seconds=5.0)
    finally:
        flipper.join()


# The transaction of a command sent with an Idempotency-Key: the key's record is written in the command's
# own transaction (it was a transaction before the command and an update after it: three in all).
KEYED_DELIVER_TRANSACTION = [
    "pg_try_advisory_xact_lock",  # the key's lock: a second request with the key is 409 at once
    'FROM "gateway_idempotencyrecord"',  # an earlier answer to replay?
    'FROM "escrow_processedcommand"',  # the key's command id was never applied (a purged key's reuse)
    "SAVEPOINT",
    *DELIVER_TRANSACTION,
    "RELEASE SAVEPOINT",
    'INSERT INTO "gateway_idempotencyrecord"',  # the answer, committed with the command
]


@pytest.mark.postgres_only
def test_a_keyed_command_is_one_transaction_with_its_idempotency_record(funded, settings):
    _, as_seller, escrow_id = funded
    settings.BUS_INLINE_DISPATCH = False
    with CaptureQueriesContext(connection) as captured:
        first = act(as_seller, escrow_id, "deliver", HTTP_IDEMPOTENCY_KEY="deliver-1")
    assert first.status_code == 202
    sql = [q["sql"] for q in captured.captured_queries]
    assert sql[0] == "BEGIN" and sql[-1] == "COMMIT" and sql.count("BEGIN") == 1, "\n".join(sql)
    inside = sql[1:-1]
    assert len(inside) == len(KEYED_DELIVER_TRANSACTION), "\n".join(inside)
    for statement, expected in zip(inside, KEYED_DELIVER_TRANSACTION, strict=True):
        assert expected in statement, (expected, statement)

    # The replay is one short transaction: the key's lock and the record, no command.
    with CaptureQueriesContext(connection) as replayed:
        again = act(as_seller, escrow_id, "deliver", HTTP_IDEMPOTENCY_KEY="deliver-1")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    sql = [q["sql"] for q in replayed.captured_queries]
    assert sql[0] == "BEGIN" and sql[-1] == "COMMIT" and len(sql) == 4, "\n".join(sql)


# The transaction of a proposal (POST /escrows): the escrow is inserted once, at the version its first event
# gave it, and its command claimed as every other command is.
CREATE_TRANSACTION = [
    "advisory_xact_lock",  # the new escrow's message stream
    'FROM "escrow_escrow"',  # no escrow with this id yet
    "INTO escrow_processedcommand",  # the command id, ON CONFLICT DO NOTHING
    'INTO "escrow_escrowevent"',  # EscrowCreated in the escrow's own log
    'INTO "escrow_escrow"',  # the escrow, once: no UPDATE of its version after the insert
    "INTO outbox_outboxmessage",  # EscrowCreated and the command, with their NOTIFY
]


@pytest.mark.postgres_only
def test_a_proposal_is_one_transaction_that_writes_the_escrow_once(api_client, buyer, seller, settings):
    settings.BUS_INLINE_DISPATCH = False
    as_buyer = api_client(buyer)
    body = {"seller": seller.username, "amount": "149.99", "currency": "USD", "description": "Dominus"}
    with CaptureQueriesContext(connection) as captured:
        assert as_buyer.post("/api/v1/escrows", body, format="json").status_code == 202
    sql = [q["sql"] for q in captured.captured_queries]
    begin, _ = _the_transaction(sql, CREATE_TRANSACTION)
    assert sql.count("BEGIN") == 1 and not any(s.startswith('UPDATE "escrow_escrow"') for s in sql)
    # Before it, outside: the read that both parties are active users.
    assert any('FROM "auth_user"' in s for s in sql[:begin])
