"""Idempotency keys (IETF httpapi Idempotency-Key draft): one record per caller and key; the staff
permissions on the audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.public import AuditLog as CoreAuditLog


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


class AuditLog(CoreAuditLog):
    """The staff audit log (apps.core) as the gateway's staff permissions know it: the permissions the
    staff groups grant (`manage.py setup_staff_groups`) are declared here, so they keep the names
    `gateway.<codename>` they have always had."""

    class Meta:
        proxy = True
        permissions = [
            ("resolve_dispute", "Can resolve a dispute (release, refund or split)"),
            ("add_dispute_note", "Can add a note to a dispute"),
            ("hold_escrow", "Can put an escrow on hold for an investigation and lift the hold"),
            ("retry_payout", "Can retry a failed transfer or refund"),
            ("return_stranded_funds", "Can refund money a settled escrow still holds"),
            ("upload_evidence", "Can upload dispute evidence on behalf of a party"),
        ]
