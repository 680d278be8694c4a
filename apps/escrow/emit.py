"""Writing what a transition decided: its `EscrowEvent` row and outbox row (`emit`), and the commands it
asks of other services (`send`), all inside the caller's transaction, after `escrow_lock`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Protocol, cast

import betterproto2
from django.utils import timezone

from apps.escrow.models import Escrow, EscrowEvent
from apps.escrow.rules import STAFF, SYSTEM, TIMER
from apps.outbox.public import context, deterministic_id, outbox_append, type_name
from proto.common.v1 import Actor, ActorKind


class _EscrowEventMessage(Protocol):
    state: str


def emit(
    escrow: Escrow,
    event: betterproto2.Message,
    *,
    actor: Actor | None = None,
    command_id: uuid.UUID | None = None,
    text: Mapping[str, str] | None = None,
) -> None:
    """Appends an event at the escrow's next version: to its own log and to the outbox.

    The event carries the state the escrow is in once it applies (`state`, filled in here), so a
    transition sets the escrow's new state before it emits the events of that state; readers (the
    projections, notifications) take the state from the event instead of deciding it again.

    `text` is the free text that goes with the event (a description, a reason, a note): it is kept in the
    escrow's own log only, never in the message (apps/escrow/text.py)."""
    cast(_EscrowEventMessage, event).state = str(escrow.state)
    escrow.version += 1
    name = type_name(event)
    event_id = deterministic_id(escrow.id, escrow.version, name)
    now = timezone.now()
    trace = context.current()
    causation = str(command_id) if command_id else trace.causation_id
    EscrowEvent.objects.create(
        escrow=escrow,
        version=escrow.version,
        event_id=event_id,
        type=name,
        payload=bytes(event),
        data={**event.to_dict(casing=betterproto2.Casing.SNAKE), **(text or {})},
        actor_kind=_actor_kind(actor),
        actor_id=actor.user_id if actor is not None and actor.user_id else None,
        command_id=command_id,
        causation_id=causation,
        correlation_id=trace.correlation_id,
        occurred_at=now,
    )
    outbox_append(
        message=event,
        aggregate_id=str(escrow.id),
        aggregate_version=escrow.version,
        event_id=event_id,
        causation_id=causation,
        occurred_at=now,
    )


def _actor_kind(actor: Actor | None) -> str:
    if actor is None:
        return SYSTEM
    return {ActorKind.USER: "user", ActorKind.STAFF: STAFF, ActorKind.TIMER: TIMER}.get(actor.kind, SYSTEM)


def send(escrow: Escrow, command: betterproto2.Message, *, command_id: uuid.UUID | None = None) -> None:
    """An outbound command to another service, in the same transaction as the event that caused it."""
    outbox_append(
        message=command,
        aggregate_id=str(escrow.id),
        aggregate_version=escrow.version,
        event_id=deterministic_id(escrow.id, escrow.version, type_name(command)),
        causation_id=str(command_id) if command_id else "",
    )
