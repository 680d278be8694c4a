"""Idempotency keys (IETF httpapi Idempotency-Key draft): one record per caller and key."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    class Status(models.TextChoices):
        IN_FLIGHT = "in_flight"
        DONE = "done"
        # The request failed unexpectedly (a 5xx): the same request may take the key again, with the same
        # command id, so a command that did commit is not applied twice.
        RETRY = "retry"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    response_location = models.CharField(max_length=500, blank=True)
    command_id = models.UUIDField(null=True)
    # Records expire IDEMPOTENCY_KEY_TTL_HOURS after this; the bus worker's tick purges them.
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class AuditLog(models.Model):
    """Every staff action (who, what, why, when), written in the same transaction as its effect.
    Append-only: rows are never changed or deleted. The custom permissions are what the staff groups
    grant (see `manage.py setup_staff_groups`)."""

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

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=50, choices=Action.choices)
    escrow_id = models.UUIDField(null=True, blank=True, db_index=True)
    target = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    command_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("resolve_dispute", "Can resolve a dispute (release, refund or split)"),
            ("add_dispute_note", "Can add a note to a dispute"),
            ("hold_escrow", "Can put an escrow on hold for an investigation and lift the hold"),
            ("retry_payout", "Can retry a failed transfer or refund"),
            ("return_stranded_funds", "Can refund money a settled escrow still holds"),
            ("upload_evidence", "Can upload dispute evidence on behalf of a party"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_id} {self.action} {self.escrow_id or self.target}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("AuditLog is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("AuditLog is append-only")
