"""What other apps may use of the escrow service: its command dispatch, the command types it takes, which
actions a user may take now, its error types, evidence, and its bus subscriber and timers (wired in
escrow_project/bus.py).

Every edge (REST API, web app, Discord) builds one of the commands below and calls `dispatch`:

    from apps.escrow import public as escrow
    escrow.dispatch(escrow.AcceptEscrow(escrow_id=..., actor=...), command_id=uuid.uuid4())

`allowed_actions(escrow, user_id, staff=False)` names what to offer a person (accept, decline, pay,
deliver, release, dispute, cancel); see `apps.escrow.actions`. `EscrowState` names the states (no edge
retypes them).

Free text (a description, the reasons and notes people give) never travels in a message: another app that
shows it reads it with `event_text(event_id)` for the events in `TEXT_EVENTS` (see `apps.escrow.text`).

Inside the app: `rules` (states, who may do what, no database), `commands` and `ops` (one function per
transition), `reactions` (to payments events), `dispatch`, `runner` and `emit` (the shared plumbing).
"""

from apps.escrow.actions import allowed_actions
from apps.escrow.dispatch import dispatch
from apps.escrow.errors import EscrowError, EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed
from apps.escrow.evidence import EvidenceRejected, evidence_add
from apps.escrow.handlers import SUBSCRIBER
from apps.escrow.money import money_held_by_state
from apps.escrow.rules import ACTION_COMMANDS, ACTIONS, TERMINAL_STATES, EscrowState
from apps.escrow.runner import CommandResult, command_applied
from apps.escrow.text import TEXT_EVENTS, event_text
from apps.escrow.timers import fire_due_timers
from proto.common.v1 import Actor, ActorKind
from proto.escrow.v1 import (
    AcceptEscrow,
    CancelEscrow,
    CreateEscrow,
    DeclineEscrow,
    MarkDelivered,
    OpenDispute,
    ReleaseFunds,
    ResolveDispute,
)

__all__ = [
    "event_text",
    "ACTIONS",
    "ACTION_COMMANDS",
    "AcceptEscrow",
    "Actor",
    "ActorKind",
    "CancelEscrow",
    "CommandResult",
    "CreateEscrow",
    "DeclineEscrow",
    "EscrowError",
    "EscrowNotFound",
    "EscrowState",
    "EvidenceRejected",
    "InvalidCommand",
    "InvalidTransition",
    "MarkDelivered",
    "NotAllowed",
    "SUBSCRIBER",
    "TEXT_EVENTS",
    "TERMINAL_STATES",
    "OpenDispute",
    "ReleaseFunds",
    "ResolveDispute",
    "allowed_actions",
    "command_applied",
    "dispatch",
    "evidence_add",
    "fire_due_timers",
    "money_held_by_state",
]
