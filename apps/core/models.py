"""The staff audit log, shared by every app that gives staff something to do."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class AuditLog(models.Model):
    """Every staff action (who, what, why, when), written in the same transaction as its effect.
    Append-only: rows are never changed or deleted.

    The table is the one the gateway created (`gateway_auditlog`). The permissions the staff groups
    grant are declared on the gateway's proxy of this model (`apps.gateway.models.AuditLog`), so they
    keep their names (`gateway.resolve_dispute`, ...) and every group that holds them."""

    class Action(models.TextChoices):
        RESOLVE_DISPUTE = "resolve_dispute"
        ADD_NOTE = "add_note"
        REPLAY_DEAD_LETTER = "replay_dead_letter"
        REBUILD_PROJECTIONS = "rebuild_projections"
        HOLD = "hold"
        UNHOLD = "unhold"
        RETRY_PAYOUT = "retry_payout"
        RETURN_STRANDED_FUNDS = "return_stranded_funds"
        RESEND_NOTIFICATION = "resend_notification"
        UPLOAD_EVIDENCE = "upload_evidence"
        # Management commands (one row per run; apps/core/staff_commands.py).
        RESOLVE_COMPLIANCE_HOLD = "resolve_compliance_hold"
        REPLAY_DEAD_LETTERS = "replay_dead_letters"
        REPROCESS_WEBHOOKS = "reprocess_webhooks"
        SEND_WAITING_PAYOUTS = "send_waiting_payouts"

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=50, choices=Action.choices)
    escrow_id = models.UUIDField(null=True, blank=True, db_index=True)
    target = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    command_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "gateway_auditlog"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_id} {self.action} {self.escrow_id or self.target}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("AuditLog is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("AuditLog is append-only")
