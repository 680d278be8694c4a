"""Writing the staff audit log. Callers pass the reason the staff member gave; it is required. Call it
inside the transaction of the action it records, so both commit or neither does."""

from __future__ import annotations

import uuid
from typing import Any

from apps.core.models import AuditLog


class ReasonRequired(ValueError):
    pass


def audit_record(
    *,
    actor: Any,
    action: str,
    reason: str,
    escrow_id: uuid.UUID | str | None = None,
    target: str = "",
    detail: dict[str, Any] | None = None,
    command_id: uuid.UUID | None = None,
) -> AuditLog:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("a staff action needs a reason")
    return AuditLog.objects.create(
        actor=actor,
        action=action,
        reason=reason[:2000],
        escrow_id=escrow_id,
        target=target[:200],
        detail=detail or {},
        command_id=command_id,
    )
