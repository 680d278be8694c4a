from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import BooleanField, ExpressionWrapper, QuerySet
from django.http import HttpRequest

from apps.core.public import AuditLog, ReadOnlyAdmin, audit_record
from apps.outbox import reader
from apps.outbox.models import RELAY_CHECKPOINT, DeadLetter, OutboxMessage, SubscriberCheckpoint
from apps.outbox.registry import get_subscriber
from apps.outbox.retry import replay_dead_letter


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "aggregate_id", "aggregate_version", "topic", "occurred_at", "published")
    list_filter = ("topic", "type")
    search_fields = ("aggregate_id", "event_id")
    readonly_fields = [*(f.name for f in OutboxMessage._meta.fields if f.name != "payload"), "published"]
    exclude = ("payload",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboxMessage]:
        # Published = at or before the relay's checkpoint: one read of it per page, not one per row.
        published = ExpressionWrapper(reader.rows_up_to(*reader.relay_position()), output_field=BooleanField())
        return super().get_queryset(request).annotate(relayed=published)

    @admin.display(boolean=True, description="published to Kafka")
    def published(self, obj: OutboxMessage) -> bool:
        relayed = getattr(obj, "relayed", None)
        return reader.is_published(obj) if relayed is None else bool(relayed)


@admin.register(SubscriberCheckpoint)
class SubscriberCheckpointAdmin(ReadOnlyAdmin):
    list_display = ("subscriber", "last_txid", "last_id", "lag", "updated_at")

    @admin.display(description="lag (messages)")
    def lag(self, obj: SubscriberCheckpoint) -> int | str:
        if obj.subscriber == RELAY_CHECKPOINT:
            return reader.unpublished_rows().count()
        try:
            return reader.lag(get_subscriber(obj.subscriber))
        except LookupError:
            return "-"


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("id", "subscriber", "type", "aggregate_id", "attempts", "status", "created_at")
    list_filter = ("status", "subscriber", "type")
    search_fields = ("aggregate_id", "event_id")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ["replay"]

    @admin.action(description="Replay the selected dead letters")
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done = failed = 0
        for letter in queryset.filter(status=DeadLetter.Status.OPEN):
            try:
                if replay_dead_letter(letter):
                    audit_record(
                        actor=request.user,
                        action=AuditLog.Action.REPLAY_DEAD_LETTER,
                        escrow_id=_uuid_or_none(letter.aggregate_id),
                        target=f"dead letter {letter.pk}",
                        reason="replay requested in the admin",
                        detail={"subscriber": letter.subscriber, "type": letter.type},
                    )
                done += 1
            except Exception as exc:  # noqa: BLE001 - reported to the operator
                failed += 1
                self.message_user(request, f"{letter}: still failing: {exc!r}", messages.ERROR)
        self.message_user(request, f"{done} replayed, {failed} still failing")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Needed for the action; every field stays read-only.
        return request.user.has_perm("outbox.change_deadletter")


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
