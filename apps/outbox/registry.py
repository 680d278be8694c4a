"""Who the bus delivers to: a `Subscriber` (one app's message class -> handler map), the `Delivery`
envelope a handler sees, `ExternalEffect` handlers that call out of the process, and the registry of
subscribers (filled by escrow_project/bus.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import betterproto2
from django.conf import settings

from apps.outbox import messages
from apps.outbox.models import RELAY_CHECKPOINT, OutboxMessage


@dataclass(frozen=True)
class Delivery:
    """The envelope of a message as a handler sees it."""

    event_id: uuid.UUID
    type: str
    topic: str
    key: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: Any
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""

    @classmethod
    def of(cls, row: OutboxMessage) -> Delivery:
        return cls(
            event_id=row.event_id,
            type=row.type,
            topic=row.topic,
            key=row.key,
            aggregate_id=row.aggregate_id,
            aggregate_version=row.aggregate_version,
            occurred_at=row.occurred_at,
            correlation_id=row.correlation_id,
            causation_id=row.causation_id,
            traceparent=row.traceparent,
        )


@dataclass(frozen=True)
class ExternalEffect:
    """A handler whose effect leaves the process (a provider API call).

    `prepare` runs outside any transaction and must be idempotent (it passes a key derived from the
    event id to the provider); `apply` records its result inside the subscriber's transaction.
    """

    prepare: Callable[[Any, Delivery], Any]
    apply: Callable[[Any, Delivery, Any], None]


Handler = Callable[[Any, Delivery], None] | ExternalEffect


@dataclass(frozen=True)
class Subscriber:
    """One app's reaction to messages: message class -> handler. Reading an app's `handlers` module
    tells every message it reacts to."""

    name: str
    handlers: Mapping[type[betterproto2.Message], Handler]
    # Its handlers append to the outbox (under `stream_lock` of the message's escrow): a batch of its
    # messages then locks those streams up front, before the transaction's first write.
    appends_to_outbox: bool = False
    topics: frozenset[str] = field(init=False)
    types: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.name == RELAY_CHECKPOINT:
            raise ValueError(f"{RELAY_CHECKPOINT!r} is the Kafka relay's checkpoint, not a subscriber name")
        object.__setattr__(self, "topics", frozenset(messages.topic_for(cls()) for cls in self.handlers))
        object.__setattr__(self, "types", frozenset(messages.type_name(cls) for cls in self.handlers))

    def handler_for(self, type_name: str) -> Handler | None:
        if type_name not in self.types:
            return None
        return self.handlers[messages.message_class(type_name)]


_registry: dict[str, Subscriber] = {}


def register(subscriber: Subscriber) -> None:
    _registry[subscriber.name] = subscriber


def unregister(name: str) -> None:
    """Removes a subscriber (tests and tools that register their own); its checkpoint stays."""
    _registry.pop(name, None)


def subscribers() -> list[Subscriber]:
    return list(_registry.values())


def outbox_subscribers() -> list[Subscriber]:
    """The subscribers this process feeds from the outbox (an app consumed from Kafka is not)."""
    enabled = set(settings.BUS_OUTBOX_SUBSCRIBERS)
    return [sub for name, sub in _registry.items() if name in enabled]


def get_subscriber(name: str) -> Subscriber:
    try:
        return _registry[name]
    except KeyError:
        raise LookupError(f"no subscriber named {name!r}; known: {sorted(_registry)}") from None
