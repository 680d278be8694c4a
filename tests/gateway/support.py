"""What the gateway tests share: a snapshot of every table a request could write, so that a refused
request can be shown to have changed nothing."""

from __future__ import annotations

from typing import Any

from apps.escrow.models import Escrow, EscrowEvent
from apps.gateway.models import IdempotencyRecord
from apps.outbox.models import OutboxMessage

PROBLEM = "application/problem+json"


def table_counts() -> dict[str, int]:
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
    response = client.get(f"/api/v1/escrows/{escrow_id}/events")
    assert response.status_code == 200, response.content
    return response.json()


def event_types(client: Any, escrow_id: str) -> list[str]:
    return [entry["type"] for entry in timeline(client, escrow_id)]
