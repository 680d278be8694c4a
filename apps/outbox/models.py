"""The transactional outbox log and the bookkeeping of its in-process subscribers."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Func


class CurrentTransactionId(Func):
    """The writing transaction's id on PostgreSQL (a 64-bit xid8), 0 elsewhere.

    Readers only take rows whose transaction id is below the oldest transaction still running, so a
    transaction that took its sequence number early and commits late is never skipped.
    """

    template = "(pg_current_xact_id()::text::bigint)"
    output_field = models.BigIntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, list[Any]]:
        return "0", []


class OutboxMessage(models.Model):
    """One message (event or command) written in the same transaction as the state change it reports.

    `id` is the insertion order; `txid` is the writing transaction. Delivery order is (txid, id).
    """

    id = models.BigAutoField(primary_key=True)
    txid = models.BigIntegerField(db_default=CurrentTransactionId(), editable=False)
    event_id = models.UUIDField(unique=True, editable=False)
    topic = models.CharField(max_length=100, editable=False)
    key = models.CharField(max_length=200, editable=False)
    type = models.CharField(max_length=200, editable=False)
    aggregate_id = models.CharField(max_length=200, editable=False)
    aggregate_version = models.BigIntegerField(editable=False)
    payload = models.BinaryField(editable=False)
    occurred_at = models.DateTimeField(editable=False)
    correlation_id = models.CharField(max_length=100, blank=True, editable=False)
    causation_id = models.CharField(max_length=100, blank=True, editable=False)
    traceparent = models.CharField(max_length=100, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["txid", "id"], name="outbox_delivery_order"),
            models.Index(fields=["aggregate_id", "id"], name="outbox_by_aggregate"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.aggregate_id} v{self.aggregate_version}"


# The Kafka relay's checkpoint is a SubscriberCheckpoint under this name (`register` refuses it as a
# subscriber's name): the rows up to it in delivery order are published.
RELAY_CHECKPOINT = "outbox:kafka-relay"


class SubscriberCheckpoint(models.Model):
    """How far one subscriber (or the Kafka relay, `RELAY_CHECKPOINT`) has read the outbox, in delivery
    order (txid, id)."""

    subscriber = models.CharField(max_length=50, primary_key=True)
    last_txid = models.BigIntegerField(default=0)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.subscriber} @ ({self.last_txid}, {self.last_id})"


class ProcessedMessage(models.Model):
    """A message whose effect a subscriber has committed: the dedupe record, written with the effect."""

    subscriber = models.CharField(max_length=50)
    event_id = models.UUIDField()
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subscriber", "event_id"], name="processed_once_per_subscriber")]

    def __str__(self) -> str:
        return f"{self.subscriber} processed {self.event_id}"


class DeadLetter(models.Model):
    """A message a subscriber gave up on after its retries. Ops can see it in the admin and replay it."""

    class Status(models.TextChoices):
        OPEN = "open", "open"
        REPLAYED = "replayed", "replayed"
        DISCARDED = "discarded", "discarded"

    subscriber = models.CharField(max_length=50)
    message = models.ForeignKey(OutboxMessage, on_delete=models.PROTECT, related_name="dead_letters")
    event_id = models.UUIDField()
    type = models.CharField(max_length=200)
    aggregate_id = models.CharField(max_length=200)
    attempts = models.PositiveIntegerField()
    error = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subscriber", "event_id"], name="one_dead_letter_per_message")]
        indexes = [models.Index(fields=["status", "created_at"], name="dead_letter_queue")]

    def __str__(self) -> str:
        return f"{self.subscriber}: {self.type} {self.aggregate_id} ({self.status})"
