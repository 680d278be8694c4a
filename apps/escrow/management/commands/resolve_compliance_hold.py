"""`manage.py resolve_compliance_hold ESCROW_ID lift|refund --staff USERNAME --note "..."`: ops end a
compliance hold after review. A thin shell: the ResolveComplianceHold command goes through the same
dispatch as the API, and the staff action is written to the AuditLog in the same transaction."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.core.public import ReasonRequired, audit_record
from apps.escrow.dispatch import dispatch
from apps.escrow.errors import EscrowError
from proto.common.v1 import Actor, ActorKind
from proto.escrow import v1 as escrow_v1

DECISIONS = {"lift": escrow_v1.ComplianceDecision.LIFT, "refund": escrow_v1.ComplianceDecision.REFUND}
AUDIT_ACTION = "resolve_compliance_hold"


class Command(BaseCommand):
    help = "End an escrow's compliance hold after review: lift it (the wallet is cleared) or refund the buyer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("escrow_id")
        parser.add_argument("decision", choices=sorted(DECISIONS))
        parser.add_argument("--staff", required=True, help="username of the staff member deciding")
        parser.add_argument("--note", required=True, help="what the review found (kept in the audit log)")
        parser.add_argument("--command-id", help="reuse to retry safely (default: a new id)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["staff"], is_staff=True, is_active=True).first()
        if user is None:
            raise CommandError(f"no active staff user {options['staff']!r}")
        try:
            escrow_id = uuid.UUID(options["escrow_id"])
            command_id = uuid.UUID(options["command_id"]) if options["command_id"] else uuid.uuid4()
        except ValueError as exc:
            raise CommandError(f"not a UUID: {exc}") from None
        note = options["note"].strip()
        command = escrow_v1.ResolveComplianceHold(
            escrow_id=str(escrow_id),
            actor=Actor(kind=ActorKind.STAFF, user_id=user.pk),
            decision=DECISIONS[options["decision"]],
            note=note[:1000],
        )
        try:
            with transaction.atomic():
                result = dispatch(command, command_id=command_id)
                if not result.duplicate:
                    audit_record(
                        actor=user,
                        action=AUDIT_ACTION,
                        escrow_id=escrow_id,
                        reason=note,
                        command_id=command_id,
                        detail={"decision": options["decision"], "state_after": result.state},
                    )
        except (EscrowError, ReasonRequired) as exc:
            raise CommandError(f"refused: {exc}") from None
        self.stdout.write(f"{options['decision']}: escrow {escrow_id} is {result.state} (command {command_id})")
