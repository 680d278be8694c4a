"""The one entry point for escrow commands: the gateway, the web app, Discord, the admin, the timers and a
Kafka command consumer all call `dispatch`."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import betterproto2

from apps.escrow import commands, ops
from apps.escrow.errors import InvalidCommand
from apps.escrow.runner import CommandResult
from proto.escrow import v1 as escrow_v1

_COMMANDS: dict[type[betterproto2.Message], Callable[..., CommandResult]] = {
    escrow_v1.CreateEscrow: commands.escrow_create,
    escrow_v1.AcceptEscrow: commands.escrow_accept,
    escrow_v1.DeclineEscrow: commands.escrow_decline,
    escrow_v1.MarkDelivered: commands.escrow_mark_delivered,
    escrow_v1.ReleaseFunds: commands.escrow_release,
    escrow_v1.CancelEscrow: commands.escrow_cancel,
    escrow_v1.OpenDispute: commands.escrow_open_dispute,
    escrow_v1.ResolveDispute: commands.escrow_resolve_dispute,
    escrow_v1.HoldEscrow: ops.escrow_hold,
    escrow_v1.UnholdEscrow: ops.escrow_unhold,
    escrow_v1.RetryPayout: ops.escrow_retry_payout,
    escrow_v1.ReturnStrandedFunds: ops.escrow_return_stranded_funds,
    escrow_v1.ResolveComplianceHold: ops.escrow_resolve_compliance_hold,
}


def dispatch(command: betterproto2.Message, *, command_id: uuid.UUID) -> CommandResult:
    """The one entry point for escrow commands: the gateway, the admin, the timers and a Kafka command
    consumer all call this."""
    try:
        handler = _COMMANDS[type(command)]
    except KeyError:
        raise InvalidCommand(f"unknown command {type(command).__name__}", field="type") from None
    return handler(command=command, command_id=command_id)
