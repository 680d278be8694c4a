"""Notifications for ops: every message owed, every attempt, and the dead ones to resend. Read-only:
the only change staff can make is a resend, through the same service the command uses."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.public import AuditLog, ReadOnlyAdmin, audit_record
from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.models import DeliveryAttempt, DiscordLink, Notification
from apps.notifications.services import NotificationError, notification_resend


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = (
        "number",
        "outcome",
        "http_status",
        "discord_code",
        "retry_after_seconds",
        "detail",
        "http_log",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user_id",
        "escrow_id",
        "kind",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
    )
    list_filter = ("status", "kind")
    search_fields = ("=user_id", "=escrow_id", "=event_id")
    readonly_fields = [f.name for f in Notification._meta.fields]
    inlines = [DeliveryAttemptInline]
    actions = ["resend"]

    @admin.action(description="Resend (dead, failed or skipped only)")
    def resend(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        queued: list[int] = []
        for notification in queryset:
            try:
                # The resend and its AuditLog row commit together: a refused resend leaves neither.
                with transaction.atomic():
                    notification_resend(notification_id=notification.pk)
                    audit_record(
                        actor=request.user,
                        action=AuditLog.Action.RESEND_NOTIFICATION,
                        escrow_id=notification.escrow_id,
                        target=f"notification:{notification.pk}",
                        reason=f"resend of a {notification.status} {notification.kind} notification",
                        detail={"notification_id": notification.pk, "status_before": notification.status},
                    )
                queued.append(notification.pk)
            except NotificationError as exc:
                self.message_user(request, f"#{notification.pk}: {exc.detail}", messages.WARNING)
        if queued:
            deliver_due_notifications(ids=queued)
            self.message_user(request, f"Resent {len(queued)} notification(s).", messages.SUCCESS)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Read-only admin, one action: resending is an ops decision, not a field edit.
        actions = super().get_actions(request)
        if not request.user.has_perm("notifications.view_notification"):
            actions.pop("resend", None)
        return actions


@admin.register(DiscordLink)
class DiscordLinkAdmin(ReadOnlyAdmin):
    list_display = ("user", "discord_user_id", "linked_at")
    search_fields = ("user__username", "=discord_user_id")
