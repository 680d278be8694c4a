"""The shared shape of an escrow command: lock, dedupe by command id, check the rules, change, record the
command. `commands` and `ops` give only the change."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import betterproto2
from django.db import connection, transaction
from django.utils import timezone

from apps.escrow.errors import EscrowNotFound, InvalidCommand
from apps.escrow.lock_objects import escrow_lock
from apps.escrow.models import Escrow, ProcessedCommand
from apps.escrow.rules import command_check, role_of
from apps.escrow.text import without_free_text
from apps.outbox.public import batched_appends, outbox_append, type_name


@dataclass(frozen=True)
class CommandResult:
    command_id: uuid.UUID
    escrow_id: uuid.UUID
    state: str
    version: int
    duplicate: bool = False


def result(escrow: Escrow, command_id: uuid.UUID, *, duplicate: bool = False) -> CommandResult:
    return CommandResult(command_id, escrow.id, escrow.state, escrow.version, duplicate)


def run_command(
    *,
    command: betterproto2.Message,
    command_id: uuid.UUID,
    escrow_id: uuid.UUID,
    apply: Callable[[Escrow], None],
) -> CommandResult:
    """A command on an existing escrow: lock, dedupe, guard (`rules.command_check`), change, record."""
    with transaction.atomic(), batched_appends():
        escrow = escrow_lock(escrow_id)
        if escrow is None:
            raise EscrowNotFound("no such escrow")
        role = role_of(escrow, command.actor)  # type: ignore[attr-defined]
        if not claim_command(escrow, command, command_id):
            return result(escrow, command_id, duplicate=True)
        command_check(escrow, type(command).__name__, role)
        apply(escrow)
        escrow.save()
        append_command(escrow, command, command_id)
        return result(escrow, command_id)


def already_applied(escrow: Escrow, command: betterproto2.Message, command_id: uuid.UUID) -> bool:
    """True for a retry of a command already applied to this escrow. A command id already spent on another
    escrow or command type is refused: answering "duplicate" there would report an effect that never
    happened."""
    applied = ProcessedCommand.objects.filter(command_id=command_id).first()
    if applied is None:
        return False
    if applied.escrow_id != escrow.id or applied.type != type_name(command):
        raise InvalidCommand("this command id was already used for another command", field="command_id")
    return True


def command_applied(command_id: uuid.UUID) -> bool:
    """Whether a command with this id was ever applied (the record is kept for good)."""
    return ProcessedCommand.objects.filter(command_id=command_id).exists()


def claim_command(escrow: Escrow, command: betterproto2.Message, command_id: uuid.UUID) -> bool:
    """Records the command as applied to this escrow, in one statement (the caller's transaction takes the
    record back if the command then fails): False for a retry of a command already applied; a command id
    already spent on another escrow or command type is refused (`already_applied`)."""
    fields = {f.name: f for f in ProcessedCommand._meta.concrete_fields}
    values = {
        "command_id": command_id,
        "escrow_id": escrow.id,
        "type": type_name(command),
        "processed_at": timezone.now(),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ProcessedCommand._meta.db_table} ({', '.join(fields[n].column for n in values)})"
            f" VALUES ({', '.join(['%s'] * len(values))}) ON CONFLICT (command_id) DO NOTHING RETURNING 1",
            [fields[name].get_db_prep_save(value, connection) for name, value in values.items()],
        )
        if cursor.fetchone() is not None:
            return True
    return not already_applied(escrow, command, command_id)


def append_command(escrow: Escrow, command: betterproto2.Message, command_id: uuid.UUID) -> None:
    # The accepted command itself, for the escrow.commands.v1 topic (an escrow process consuming from
    # Kafka dedupes it by its id), without the free text people typed: that stays with the escrow.
    outbox_append(
        message=without_free_text(command),
        aggregate_id=str(escrow.id),
        aggregate_version=escrow.version,
        event_id=command_id,
    )


def parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise EscrowNotFound("no such escrow") from None


def require_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidCommand("staff commands need a reason", field="reason")
    return reason[:1000]
