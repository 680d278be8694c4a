"""The message envelope as Kafka record headers, and back (docs/kafka.md lists them)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence

from apps.outbox.models import OutboxMessage
from apps.outbox.registry import Delivery

Headers = list[tuple[str, bytes]]

HEADER_NAMES = (
    "event_id",
    "type",
    "aggregate_id",
    "aggregate_version",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "traceparent",
)


class EnvelopeError(ValueError):
    """A record whose headers do not make a valid envelope (a poison message)."""


def headers_for(row: OutboxMessage) -> Headers:
    return envelope_headers(
        event_id=row.event_id,
        type_name=row.type,
        aggregate_id=row.aggregate_id,
        aggregate_version=row.aggregate_version,
        occurred_at=row.occurred_at,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        traceparent=row.traceparent,
    )


def envelope_headers(
    *,
    event_id: uuid.UUID | str,
    type_name: str,
    aggregate_id: str,
    aggregate_version: int | str,
    occurred_at: datetime.datetime,
    correlation_id: str,
    causation_id: str,
    traceparent: str,
) -> Headers:
    # A list literal in HEADER_NAMES order: the relay builds this for every record.
    return [
        ("event_id", str(event_id).encode()),
        ("type", type_name.encode()),
        ("aggregate_id", aggregate_id.encode()),
        ("aggregate_version", str(aggregate_version).encode()),
        ("occurred_at", occurred_at.isoformat().encode()),
        ("correlation_id", correlation_id.encode()),
        ("causation_id", causation_id.encode()),
        ("traceparent", traceparent.encode()),
    ]


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: (value or b"").decode("utf-8", "replace") for name, value in headers or ()}


def delivery_from_record(*, topic: str, key: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> Delivery:
    found = header_map(headers)
    missing = [
        name for name in ("event_id", "type", "aggregate_id", "aggregate_version", "occurred_at") if not found.get(name)
    ]
    if missing:
        raise EnvelopeError(f"missing envelope headers: {', '.join(missing)}")
    try:
        return Delivery(
            event_id=uuid.UUID(found["event_id"]),
            type=found["type"],
            topic=topic,
            key=(key or b"").decode(),
            aggregate_id=found["aggregate_id"],
            aggregate_version=int(found["aggregate_version"]),
            occurred_at=datetime.datetime.fromisoformat(found["occurred_at"]),
            correlation_id=found.get("correlation_id", ""),
            causation_id=found.get("causation_id", ""),
            traceparent=found.get("traceparent", ""),
        )
    except ValueError as exc:
        raise EnvelopeError(f"invalid envelope header: {exc}") from exc
