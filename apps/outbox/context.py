"""Request-scoped tracing context that every message written during the request carries, and the log
filter that puts it on every log line (settings.LOGGING names it: logging is configured before the app
registry is ready, and this module loads no models)."""

from __future__ import annotations

import contextvars
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from apps.outbox import tracing
from apps.outbox.tracing import valid_traceparent


@dataclass(frozen=True)
class TraceContext:
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""


_EMPTY = TraceContext()
_current: contextvars.ContextVar[TraceContext] = contextvars.ContextVar("trace_context")


def current() -> TraceContext:
    return _current.get(_EMPTY)


@contextmanager
def bound(context: TraceContext) -> Iterator[TraceContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child_traceparent(parent: str) -> str:
    """A new span in the same trace (W3C trace-context): same trace id, new parent id."""
    if not valid_traceparent(parent):
        return new_traceparent()
    _, trace_id, _, flags = parent.split("-")
    return f"00-{trace_id}-{os.urandom(8).hex()}-{flags}"


@contextmanager
def handling(delivery: Any, name: str) -> Iterator[TraceContext]:
    """The context a subscriber's handler runs in: same correlation id, caused by the delivered event,
    a new span in the delivered message's trace. `name` is "<subscriber> <message type>".

    With tracing on, that span is a real OpenTelemetry span (child of the message's traceparent, which a
    Kafka consumer read from the record's headers), and the messages the handler writes carry it."""
    active = tracing.tracer()
    if active is None:
        with bound(
            TraceContext(
                correlation_id=delivery.correlation_id,
                causation_id=str(delivery.event_id),
                traceparent=child_traceparent(delivery.traceparent),
            )
        ) as trace:
            yield trace
        return
    from opentelemetry.trace import SpanKind

    attributes = {
        "subscriber": name.split(" ", 1)[0],
        "messaging.operation.type": "process",
        "messaging.destination.name": delivery.topic,
        "messaging.message.id": str(delivery.event_id),
        "message.type": delivery.type,
        "escrow_id": delivery.aggregate_id,
        "correlation_id": delivery.correlation_id,
    }
    with (
        tracing.span(active, name, parent=delivery.traceparent, kind=SpanKind.CONSUMER, attributes=attributes) as span,
        bound(
            TraceContext(
                correlation_id=delivery.correlation_id,
                causation_id=str(delivery.event_id),
                traceparent=tracing.traceparent_of(span),
            )
        ) as trace,
    ):
        yield trace


def new_correlation_id() -> str:
    return str(uuid.uuid4())


class ContextFilter(logging.Filter):
    """Adds the request's (or the handled message's) correlation id and trace to every log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = current()
        if trace.correlation_id and not hasattr(record, "correlation_id"):
            record.correlation_id = trace.correlation_id
        if trace.traceparent and not hasattr(record, "traceparent"):
            record.traceparent = trace.traceparent
        return True
