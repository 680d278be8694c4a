"""What the notifications service knows: who is party to an escrow (from EscrowCreated, ids only) and
each message it owes a user. Delivery to Discord reads the user's linked account at send time."""

from __future__ import annotations

from django.db import models


class EscrowParties(models.Model):
    escrow_id = models.UUIDField(primary_key=True)
    buyer_id = models.BigIntegerField()
    seller_id = models.BigIntegerField()


class Notification(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"
        SKIPPED = "skipped"

    user_id = models.BigIntegerField(db_index=True)
    escrow_id = models.UUIDField(db_index=True)
    event_id = models.UUIDField()
    kind = models.CharField(max_length=50)
    text = models.CharField(max_length=2000)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event_id", "user_id"], name="one_notification_per_event_user")]
