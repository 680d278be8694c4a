"""What other apps may use of the escrow service: its command dispatch and its error types."""

from apps.escrow.errors import EscrowError, EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed
from apps.escrow.evidence import EvidenceRejected, evidence_add
from apps.escrow.services import CommandResult, command_applied, dispatch

__all__ = [
    "CommandResult",
    "EscrowError",
    "EscrowNotFound",
    "EvidenceRejected",
    "InvalidCommand",
    "InvalidTransition",
    "NotAllowed",
    "command_applied",
    "dispatch",
    "evidence_add",
]
