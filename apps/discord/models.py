"""What the Discord edge keeps: the answer it gave to each interaction (Discord may deliver one twice;
the second delivery gets the same answer and has no effect), and the follow-ups it still owes for
interactions it deferred."""

from __future__ import annotations

from django.db import models


class InteractionReceipt(models.Model):
    interaction_id = models.BigIntegerField(primary_key=True)
    kind = models.PositiveSmallIntegerField()
    user_id = models.BigIntegerField(null=True)
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"interaction {self.interaction_id} (type {self.kind})"


class FollowUp(models.Model):
    """A deferred interaction's real answer, sent by the bus worker's tick through the interaction
    webhook (`PATCH /webhooks/{application_id}/{token}/messages/@original`) once the read model shows
    the command's effect, or when waiting longer would be pointless."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    interaction_id = models.BigIntegerField(unique=True)
    application_id = models.CharField(max_length=32)
    # Discord's interaction token: valid for 15 minutes, only good for answering this interaction.
    token = models.CharField(max_length=500)
    user_id = models.BigIntegerField()
    escrow_id = models.UUIDField()
    # The escrow version the command produced: the follow-up waits until the read model shows it.
    min_version = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="discord_followup_due")]

    def __str__(self) -> str:
        return f"follow-up for interaction {self.interaction_id} ({self.status})"
