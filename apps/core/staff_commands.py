"""Management commands that are staff actions (replaying dead letters, reprocessing webhooks, sending
parked payouts, rebuilding read models). The operator says who they are (`--staff USERNAME`, an active
staff user) and why (`--reason`); a run without both is refused before it does anything. Each run writes
one AuditLog row: the action, what it was aimed at, the reason, and what it did (counts), also when it
stopped on an error, so the audit trail is the same whether staff act in the admin, the API or a shell.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.core.audit import audit_record


class StaffCommand(BaseCommand):
    """Subclasses name their `audit_action`, call `super().add_arguments(parser)` and run their work
    inside `with self.audited(options, target=...) as detail:`, putting their counts into `detail`."""

    audit_action = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--staff",
            default="",
            metavar="USERNAME",
            help="who runs this: the username of an active staff user (required; kept in the audit log)",
        )
        parser.add_argument("--reason", default="", help="why it is run (required; kept in the audit log)")

    def staff_operator(self, options: dict[str, Any]) -> Any:
        """The active staff user named by --staff, once a reason is given; CommandError otherwise."""
        username = str(options.get("staff") or "").strip()
        if not username:
            raise CommandError("say who runs this: --staff USERNAME (an active staff user)")
        if not str(options.get("reason") or "").strip():
            raise CommandError("say why: --reason TEXT (kept in the audit log)")
        user = get_user_model().objects.filter(username=username, is_staff=True, is_active=True).first()
        if user is None:
            raise CommandError(f"no active staff user {username!r}")
        return user

    @contextmanager
    def audited(self, options: dict[str, Any], *, target: str) -> Iterator[dict[str, Any]]:
        """Checks the operator first, then yields the detail dict the run fills in; the AuditLog row is
        written when the run ends, with an `error` entry if it stopped on one."""
        operator = self.staff_operator(options)
        detail: dict[str, Any] = {"edge": "command"}
        try:
            yield detail
        except BaseException as exc:
            detail["error"] = repr(exc)[:500]
            raise
        finally:
            with transaction.atomic():
                audit_record(
                    actor=operator,
                    action=self.audit_action,
                    reason=str(options["reason"]),
                    target=target,
                    detail=detail,
                )
