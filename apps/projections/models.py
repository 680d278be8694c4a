"""Read models built from events. The gateway's GETs read only these."""

from __future__ import annotations

from django.db import models


class EscrowView(models.Model):
    escrow_id = models.UUIDField(primary_key=True)
    buyer_id = models.BigIntegerField(db_index=True)
    seller_id = models.BigIntegerField(db_index=True)
    state = models.CharField(max_length=20)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    description = models.CharField(max_length=500)
    inspection_period_hours = models.PositiveIntegerField()
    funding_deadline = models.DateTimeField(null=True)
    inspection_deadline = models.DateTimeField(null=True)
    dispute_reason = models.CharField(max_length=1000, blank=True)
    paid_to_seller_minor = models.BigIntegerField(default=0)
    fee_minor = models.BigIntegerField(default=0)
    refunded_minor = models.BigIntegerField(default=0)
    payout_pending = models.BooleanField(default=False)
    refund_pending = models.BooleanField(default=False)
    attention = models.CharField(max_length=50, blank=True)
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["buyer_id", "-created_at"], name="view_by_buyer"),
            models.Index(fields=["seller_id", "-created_at"], name="view_by_seller"),
        ]

    def __str__(self) -> str:
        return f"{self.escrow_id} {self.state}"


class TimelineEntry(models.Model):
    escrow_id = models.UUIDField()
    version = models.PositiveIntegerField()
    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    actor_kind = models.CharField(max_length=20, blank=True)
    actor_id = models.BigIntegerField(null=True)
    data = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["escrow_id", "version"], name="timeline_version_once")]
        ordering = ["escrow_id", "version"]

    def __str__(self) -> str:
        return f"{self.escrow_id} v{self.version} {self.type}"
