"""What the gateway tests share: a snapshot of every table a request could write, so that a refused
request can be shown to have changed nothing."""

from __future__ import annotations

import time
from typing import Any

from apps.escrow.models import Escrow, EscrowEvent
from apps.gateway.models import IdempotencyRecord
from apps.outbox.drain import drain
from apps.outbox.models import OutboxMessage
from apps.outbox.public import lag, outbox_subscribers
from tests.helpers import create_escrow

PROBLEM = "application/problem+json"


def settle(*, limit_seconds: float = 60.0) -> None:
    """Lets the bus finish every chain a request started. Inline dispatch usually has, but on PostgreSQL
    an older open transaction holds the transaction-id watermark back, and the inline pass gives up
    after a moment and leaves the rest to the worker loop, which tests do not run. The limit is a
    bound on a stuck bus, not a speed expectation."""
    deadline = time.monotonic() + limit_seconds
    while True:
        drain()
        lagging = {sub.name: lag(sub) for sub in outbox_subscribers()}
        if not any(lagging.values()):
            return
        assert time.monotonic() < deadline, f"the bus did not settle: {lagging}"
        time.sleep(0.01)


def table_counts() -> dict[str, int]:
    settle()
    return {
        "escrows": Escrow.objects.count(),
        "events": EscrowEvent.objects.count(),
        "outbox": OutboxMessage.objects.count(),
        "idempotency": IdempotencyRecord.objects.count(),
    }


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The answer is RFC 9457 problem+json with this status and stable code."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith(PROBLEM), response["Content-Type"]
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == f"urn:escrow:problem:{code}"
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


def timeline(client: Any, escrow_id: str) -> list[dict[str, Any]]:
    settle()
    response = client.get(f"/api/v1/escrows/{escrow_id}/events")
    assert response.status_code == 200, response.content
    return response.json()


def event_types(client: Any, escrow_id: str) -> list[str]:
    return [entry["type"] for entry in timeline(client, escrow_id)]


def create_settled(client: Any, *, seller: Any, **fields: Any) -> dict[str, Any]:
    """Creates an escrow through the API and waits for its chain (payment intent, read model): reads
    come from projections, so on a busy PostgreSQL a GET right after the 202 may not see it yet."""
    created = create_escrow(client, seller=seller, **fields)
    settle()
    return created
