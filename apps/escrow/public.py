"""What other apps may use of the escrow service: its command dispatch and its error types, evidence,
its bus subscriber and its timers (wired in escrow_project/bus.py)."""

from apps.escrow.errors import EscrowError, EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed
from apps.escrow.evidence import EvidenceRejected, evidence_add
from apps.escrow.handlers import SUBSCRIBER
from apps.escrow.services import CommandResult, dispatch
from apps.escrow.timers import fire_due_timers

__all__ = [
    "CommandResult",
    "EscrowError",
    "EscrowNotFound",
    "EvidenceRejected",
    "InvalidCommand",
    "InvalidTransition",
    "NotAllowed",
    "SUBSCRIBER",
    "dispatch",
    "evidence_add",
    "fire_due_timers",
]
