"""What the notifications service knows: who is party to an escrow (from EscrowCreated, ids only), each
message it owes a user, and every attempt to deliver it. The Discord account a user linked lives here
too and is read at send time: no Discord id ever travels in an event."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class EscrowParties(models.Model):
    escrow_id = models.UUIDField(primary_key=True)
    buyer_id = models.BigIntegerField()
    seller_id = models.BigIntegerField()

    def __str__(self) -> str:
        return f"escrow {self.escrow_id}: buyer {self.buyer_id}, seller {self.seller_id}"


class Notification(models.Model):
    """One message owed to one user for one event (unique: an event arriving twice owes nothing more).

    Lifecycle: PENDING (due at `next_attempt_at`) -> SENDING (claimed by one sender until
    `claimed_until`) -> SENT | FAILED (permanent, e.g. the user does not accept DMs) | DEAD (transient
    errors outlasted the attempt budget; ops resend it) | SKIPPED (no linked account, or muted)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        DEAD = "dead"
        SKIPPED = "skipped"

    user_id = models.BigIntegerField(db_index=True)
    escrow_id = models.UUIDField(db_index=True, null=True, blank=True)
    event_id = models.UUIDField()
    kind = models.CharField(max_length=50)
    text = models.CharField(max_length=2000)
    # Discord message components sent with the text: the buttons for what the recipient may do now
    # (apps/notifications/components.py). A click is re-checked by the Discord edge, never trusted.
    components = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    # Attempts since the notification was last (re)queued; the attempt budget counts these.
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    discord_message_id = models.CharField(max_length=32, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event_id", "user_id"], name="one_notification_per_event_user")]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due")]

    def __str__(self) -> str:
        return f"{self.kind} to user {self.user_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try to deliver a notification, whatever its outcome. Append-only, for ops and audit."""

    class Outcome(models.TextChoices):
        SENT = "sent"
        TRANSIENT = "transient"
        PERMANENT = "permanent"
        SKIPPED = "skipped"

    notification = models.ForeignKey(Notification, on_delete=models.PROTECT, related_name="delivery_attempts")
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    discord_code = models.PositiveIntegerField(null=True, blank=True)
    retry_after_seconds = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=500, blank=True, default="")
    # Every HTTP exchange of the attempt ("POST /channels/{id}/messages 429"), including the ones
    # the Discord client retried by itself after a short rate limit.
    http_log = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["notification_id", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of notification {self.notification_id}: {self.outcome}"


class DiscordLink(models.Model):
    """A user's Discord account. One Discord account belongs to at most one user."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="discord_link")
    discord_user_id = models.BigIntegerField(unique=True)
    linked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"user {self.user_id} <-> discord {self.discord_user_id}"


class NotificationPreference(models.Model):
    """An explicit choice; no row means the kind's default (on)."""

    user_id = models.BigIntegerField()
    kind = models.CharField(max_length=50)
    enabled = models.BooleanField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user_id", "kind"], name="one_preference_per_user_kind")]

    def __str__(self) -> str:
        return f"user {self.user_id}: {self.kind} {'on' if self.enabled else 'off'}"
