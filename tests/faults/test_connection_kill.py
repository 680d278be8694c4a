"""The database connection of a request killed in the middle of its command transaction.

A second connection holds a lock the command needs, waits until the request's backend is blocked on
it (so the request is provably inside its transaction), then `pg_terminate_backend`s that backend.
Two places: before the command's first write (the escrow's stream lock), and after its writes (the
ProcessedCommand row, the last insert of a command). The command must be applied fully or not at all,
the client must get a 5xx problem+json it can retry, and the retry with the same Idempotency-Key must
have exactly one effect."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from django.db import connection, connections, transaction

from apps.escrow.models import Escrow, EscrowEvent, ProcessedCommand
from apps.gateway.idempotency import KEY_NAMESPACE
from apps.outbox.models import OutboxMessage
from tests.faults.support import assert_nothing_twice, assert_records_agree, funded_escrow, payment_commands
from tests.gateway.support import PROBLEM, settle
from tests.helpers import act
from tests.properties.figures import record_figures

pytestmark = pytest.mark.postgres_only

FIGURES: Counter[str] = Counter()


def _footprint(escrow_id: str) -> tuple[Any, ...]:
    escrow = Escrow.objects.filter(pk=escrow_id).values_list("state", "version", "held_minor").get()
    return (
        escrow,
        EscrowEvent.objects.filter(escrow_id=escrow_id).count(),
        OutboxMessage.objects.filter(aggregate_id=escrow_id).count(),
        ProcessedCommand.objects.filter(escrow_id=escrow_id).count(),
    )


def _blocked_backend(*, limit_seconds: float = 30.0) -> tuple[int, str]:
    """The backend waiting on a lock this connection holds (the request, inside its transaction), and
    the statement it waits in."""
    deadline = time.monotonic() + limit_seconds
    with connection.cursor() as cursor:
        while True:
            # pg_stat_activity is read once per transaction unless its snapshot is cleared.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                "AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
            row = cursor.fetchone()
            if row:
                return int(row[0]), str(row[1])
            assert time.monotonic() < deadline, "the request never blocked on the held lock"
            time.sleep(0.01)


def _terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True
    FIGURES["backends terminated"] += 1


def _hold(escrow_id: str, command_id: uuid.UUID, where: str) -> None:
    """Takes, in the caller's open transaction, the lock the command will wait for."""
    if where == "before its first write":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"stream:{escrow_id}"])
    else:
        # The same primary key, uncommitted: the command's own insert waits for this transaction.
        ProcessedCommand.objects.create(command_id=command_id, escrow_id=escrow_id, type="held.by.test")


ACTIONS = {
    # action, who, body, starting state, what a success asks the payments service for
    "release": ("buyer", {}, "DELIVERED", {"TransferToSeller": 1}),
    "cancel": ("seller", {"reason": "out of stock"}, "FUNDS_HELD", {"InitiateRefund": 1}),
}


@pytest.mark.parametrize("where", ["before its first write", "after its writes"])
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_command_whose_connection_is_killed_is_all_or_nothing_and_safe_to_retry(
    api_client, buyer, seller, action, where
):
    who, body, start, asks = ACTIONS[action]
    users = {"buyer": buyer, "seller": seller}
    escrow_id = funded_escrow(api_client(buyer), seller)
    if start == "DELIVERED":
        assert act(api_client(seller), escrow_id, "deliver").status_code == 202
        settle()
    key = f"{action}-{uuid.uuid4()}"
    command_id = uuid.uuid5(KEY_NAMESPACE, f"{users[who].pk}:{key}")
    before = _footprint(escrow_id)
    answers: list[Any] = []

    def send() -> None:
        client = api_client(users[who])
        client.raise_request_exception = False  # answer as a server would: handler500
        try:
            answers.append(act(client, escrow_id, action, body, HTTP_IDEMPOTENCY_KEY=key))
        finally:
            connections.close_all()

    # Given: the request is inside its command transaction, waiting for a lock this test holds.
    requester = threading.Thread(target=send)
    with transaction.atomic():
        _hold(escrow_id, command_id, where)
        requester.start()
        pid, statement = _blocked_backend()
        assert ("escrow_processedcommand" if where == "after its writes" else "pg_advisory_xact_lock") in statement
        # When: its database backend is terminated from here.
        _terminate(pid)
        # (the held lock goes with this transaction; the held ProcessedCommand row is never committed)
        transaction.set_rollback(True)
    requester.join(60)
    assert not requester.is_alive(), "the request hung after its connection was killed"

    # Then: a 5xx problem+json, and nothing of the command was applied.
    (answer,) = answers
    assert answer.status_code >= 500, (answer.status_code, answer.content)
    assert answer["Content-Type"].startswith(PROBLEM)
    assert answer.json()["status"] == answer.status_code
    settle()
    assert _footprint(escrow_id) == before
    assert not ProcessedCommand.objects.filter(pk=command_id).exists()
    assert_records_agree(escrow_id)

    # When: the client retries with the same key, twice.
    retry = act(api_client(users[who]), escrow_id, action, body, HTTP_IDEMPOTENCY_KEY=key)
    again = act(api_client(users[who]), escrow_id, action, body, HTTP_IDEMPOTENCY_KEY=key)

    # Then: one effect, and the second retry replays the first answer.
    assert retry.status_code == 202, retry.content
    assert retry.json()["command_id"] == str(command_id)
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    settle()
    assert ProcessedCommand.objects.filter(pk=command_id).count() == 1
    assert payment_commands(escrow_id) == asks
    assert Escrow.objects.get(pk=escrow_id).state in ("RELEASED", "REFUNDED")
    assert_records_agree(escrow_id)
    assert_nothing_twice()
    FIGURES["killed commands retried"] += 1
    record_figures("connection kills", dict(FIGURES))
