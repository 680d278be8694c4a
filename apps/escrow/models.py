"""The escrow aggregate and its append-only audit log. Only the escrow commands and reactions write these."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from apps.escrow.rules import TERMINAL_STATES, EscrowState

__all__ = ["TERMINAL_STATES", "Escrow", "EscrowEvent", "EscrowState", "Evidence", "ProcessedCommand"]


# The states are the rules' (a module with no database); the labels are the ones Django's TextChoices gave.
STATE_CHOICES = [(state.value, state.name.replace("_", " ").title()) for state in EscrowState]


class Escrow(models.Model):
    """Money columns are integer minor units of `currency`. The database itself refuses any row where
    received != held + paid out + refunded + fee, or any of them is negative."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    seller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=20, choices=STATE_CHOICES, default=EscrowState.AWAIT_ACCEPTANCE)
    # Which party created the deal; the other one (the counterparty) accepts or declines it.
    creator_role = models.CharField(max_length=10, choices=[("buyer", "buyer"), ("seller", "seller")], default="buyer")
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    description = models.CharField(max_length=500)
    inspection_period_hours = models.PositiveIntegerField()
    fee_bps = models.PositiveIntegerField()
    # The counterparty must accept by then, or the deal is cancelled.
    acceptance_deadline = models.DateTimeField(null=True, blank=True)
    # Starts when the deal is accepted (unset before).
    funding_deadline = models.DateTimeField(null=True, blank=True)
    inspection_deadline = models.DateTimeField(null=True, blank=True)

    received_minor = models.BigIntegerField(default=0)
    held_minor = models.BigIntegerField(default=0)
    paid_out_minor = models.BigIntegerField(default=0)
    refunded_minor = models.BigIntegerField(default=0)
    fee_minor = models.BigIntegerField(default=0)
    # Money asked of payments and not yet confirmed: the seller's gross share, the buyer's refund.
    pending_payout_minor = models.BigIntegerField(default=0)
    pending_refund_minor = models.BigIntegerField(default=0)

    dispute_reason = models.CharField(max_length=1000, blank=True)
    # Set when something needs a human (failed transfer, mismatched payment, chargeback).
    attention = models.CharField(max_length=50, blank=True)
    attention_detail = models.CharField(max_length=1000, blank=True)
    # The pending transfer is parked by payments until the seller registers a payout destination (the last
    # TransferFailed said so in its `awaiting_destination` field): payments sends it then, so RetryPayout
    # must not send a second one.
    payout_parked = models.BooleanField(default=False)
    # Set while staff hold the escrow for an investigation (HoldEscrow): timers stop and no command but
    # UnholdEscrow is accepted. Payment facts (a transfer that succeeds) are still recorded.
    on_hold_since = models.DateTimeField(null=True, blank=True)

    version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    received_minor=F("held_minor") + F("paid_out_minor") + F("refunded_minor") + F("fee_minor")
                ),
                name="escrow_money_balances",
            ),
            models.CheckConstraint(
                condition=Q(
                    amount_minor__gt=0,
                    received_minor__gte=0,
                    held_minor__gte=0,
                    paid_out_minor__gte=0,
                    refunded_minor__gte=0,
                    fee_minor__gte=0,
                    pending_payout_minor__gte=0,
                    pending_refund_minor__gte=0,
                ),
                name="escrow_money_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(pending_payout_minor__lte=F("held_minor") - F("pending_refund_minor")),
                name="escrow_pending_within_held",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "acceptance_deadline"], name="escrow_acceptance_timer"),
            models.Index(fields=["state", "funding_deadline"], name="escrow_funding_timer"),
            models.Index(fields=["state", "inspection_deadline"], name="escrow_inspection_timer"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.state}"

    @property
    def created_by_id(self) -> int:
        return self.seller_id if self.creator_role == "seller" else self.buyer_id

    @property
    def counterparty_id(self) -> int:
        return self.buyer_id if self.creator_role == "seller" else self.seller_id


class EscrowEvent(models.Model):
    """Append-only audit log: one row per event, numbered by the escrow's version. Rows are never
    updated or deleted (the model refuses; on PostgreSQL a trigger refuses too)."""

    escrow = models.ForeignKey(Escrow, on_delete=models.PROTECT, related_name="events")
    version = models.PositiveIntegerField()
    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=200)
    payload = models.BinaryField()
    data = models.JSONField()
    actor_kind = models.CharField(max_length=20, blank=True)
    actor_id = models.BigIntegerField(null=True, blank=True)
    command_id = models.UUIDField(null=True, blank=True)
    causation_id = models.CharField(max_length=100, blank=True)
    correlation_id = models.CharField(max_length=100, blank=True)
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["escrow", "version"], name="escrow_event_version_once")]
        ordering = ["escrow", "version"]

    def __str__(self) -> str:
        return f"{self.escrow_id} v{self.version} {self.type}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("EscrowEvent is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("EscrowEvent is append-only")


def _evidence_storage_name(instance: Evidence, filename: str) -> str:
    # Random and extension-less: the uploader's name never reaches the file system or a URL.
    return f"evidence/{secrets.token_hex(16)}"


class Evidence(models.Model):
    """A file one party submits in a dispute (itself, or through staff on its behalf). The bytes live
    under MEDIA_ROOT, which nothing serves; staff download them as attachments through the admin.
    Append-only, like the rest of the dispute record."""

    class Party(models.TextChoices):
        BUYER = "buyer"
        SELLER = "seller"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    escrow = models.ForeignKey(Escrow, on_delete=models.PROTECT, related_name="evidence")
    party = models.CharField(max_length=10, choices=Party.choices)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    file = models.FileField(upload_to=_evidence_storage_name, max_length=200)
    original_name = models.CharField(max_length=200)
    # What the bytes are (sniffed), never what the client said.
    content_type = models.CharField(max_length=50)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    description = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.escrow_id} {self.party} {self.original_name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("Evidence is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Evidence is append-only")


class ProcessedCommand(models.Model):
    """A command that was applied, recorded in the same transaction: the same command id twice has one
    effect."""

    command_id = models.UUIDField(primary_key=True)
    escrow_id = models.UUIDField()
    type = models.CharField(max_length=200)
    processed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.type} {self.command_id}"
