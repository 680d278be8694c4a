"""Read models built from events. The gateway's GETs read only these.

Every read model exists twice, as a "blue" and a "green" table (blue/green). `ActiveGeneration` says
which colour the API reads and the live subscriber writes; `rebuild_projections` refills the other
colour from the event log and flips the pointer in one transaction, so readers never see a half-built
table and never wait for a rebuild. The blue tables keep their original names (EscrowView, ...).
"""

from __future__ import annotations

from django.db import models

BLUE, GREEN = "blue", "green"


class EscrowViewFields(models.Model):
    escrow_id = models.UUIDField(primary_key=True)
    buyer_id = models.BigIntegerField(db_index=True)
    seller_id = models.BigIntegerField(db_index=True)
    # The party who created the deal (the buyer or the seller); the other one accepts or declines.
    created_by_id = models.BigIntegerField(null=True)
    state = models.CharField(max_length=20)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    description = models.CharField(max_length=500)
    inspection_period_hours = models.PositiveIntegerField()
    acceptance_deadline = models.DateTimeField(null=True)
    funding_deadline = models.DateTimeField(null=True)
    inspection_deadline = models.DateTimeField(null=True)
    dispute_reason = models.CharField(max_length=1000, blank=True)
    paid_to_seller_minor = models.BigIntegerField(default=0)
    fee_minor = models.BigIntegerField(default=0)
    refunded_minor = models.BigIntegerField(default=0)
    payout_pending = models.BooleanField(default=False)
    refund_pending = models.BooleanField(default=False)
    attention = models.CharField(max_length=50, blank=True)
    attention_detail = models.CharField(max_length=1000, blank=True)
    # For the ops queues: how long the escrow has been in its state, disputed, or waiting for a human.
    state_since = models.DateTimeField(null=True)
    disputed_at = models.DateTimeField(null=True)
    attention_since = models.DateTimeField(null=True)
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    # Declared here so code that writes either colour (`Tables`) can use it; each colour has its own.
    objects = models.Manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.escrow_id} {self.state}"


class TimelineFields(models.Model):
    escrow_id = models.UUIDField()
    version = models.PositiveIntegerField()
    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    actor_kind = models.CharField(max_length=20, blank=True)
    actor_id = models.BigIntegerField(null=True)
    data = models.JSONField()

    # Declared here so code that writes either colour (`Tables`) can use it; each colour has its own.
    objects = models.Manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.escrow_id} v{self.version} {self.type}"


class DailyFigureFields(models.Model):
    """Money moved per UTC day and currency, in minor units: held (funds arrived), released (the seller's
    gross share, fee included) and refunded to buyers."""

    day = models.DateField()
    currency = models.CharField(max_length=3)
    held_minor = models.BigIntegerField(default=0)
    released_minor = models.BigIntegerField(default=0)
    refunded_minor = models.BigIntegerField(default=0)
    held_count = models.PositiveIntegerField(default=0)
    released_count = models.PositiveIntegerField(default=0)
    refunded_count = models.PositiveIntegerField(default=0)

    # Declared here so code that writes either colour (`Tables`) can use it; each colour has its own.
    objects = models.Manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.day} {self.currency}"


class EscrowView(EscrowViewFields):
    class Meta:
        indexes = [
            models.Index(fields=["buyer_id", "-created_at"], name="view_by_buyer"),
            models.Index(fields=["seller_id", "-created_at"], name="view_by_seller"),
            models.Index(fields=["state", "state_since"], name="view_by_state_age"),
            models.Index(fields=["attention", "attention_since"], name="view_by_attention"),
        ]


class EscrowViewGreen(EscrowViewFields):
    class Meta:
        indexes = [
            models.Index(fields=["buyer_id", "-created_at"], name="view_green_by_buyer"),
            models.Index(fields=["seller_id", "-created_at"], name="view_green_by_seller"),
            models.Index(fields=["state", "state_since"], name="view_green_by_state_age"),
            models.Index(fields=["attention", "attention_since"], name="view_green_by_attention"),
        ]


class TimelineEntry(TimelineFields):
    class Meta:
        constraints = [models.UniqueConstraint(fields=["escrow_id", "version"], name="timeline_version_once")]
        ordering = ["escrow_id", "version"]


class TimelineEntryGreen(TimelineFields):
    class Meta:
        constraints = [models.UniqueConstraint(fields=["escrow_id", "version"], name="timeline_green_version_once")]
        ordering = ["escrow_id", "version"]


class DailyFigure(DailyFigureFields):
    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "currency"], name="daily_figure_once")]


class DailyFigureGreen(DailyFigureFields):
    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "currency"], name="daily_figure_green_once")]


class ActiveGeneration(models.Model):
    """The pointer readers follow: which colour of a projection set is live. One row per set."""

    name = models.CharField(max_length=50, primary_key=True)
    color = models.CharField(max_length=10, choices=[(BLUE, BLUE), (GREEN, GREEN)], default=BLUE)
    generation = models.PositiveIntegerField(default=1)
    switched_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.color} (generation {self.generation})"


class ProjectionRebuild(models.Model):
    """One run of `rebuild_projections`, for ops: what was replayed and when the switch happened."""

    name = models.CharField(max_length=50)
    from_color = models.CharField(max_length=10)
    to_color = models.CharField(max_length=10)
    generation = models.PositiveIntegerField()
    events = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    switched_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.name} -> {self.to_color} (generation {self.generation})"
