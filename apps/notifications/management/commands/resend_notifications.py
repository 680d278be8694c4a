"""Ops: queue dead (or failed, or skipped) notifications again and send them now.

manage.py resend_notifications --dead          every dead notification
manage.py resend_notifications 12 15           these notifications
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.models import Notification
from apps.notifications.services import NotificationError, notification_resend


class Command(BaseCommand):
    help = "Resend dead, failed or skipped notifications (their past attempts stay recorded)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="notification ids")
        parser.add_argument("--dead", action="store_true", help="every dead notification")

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[int] = list(options["ids"])
        if options["dead"]:
            ids += list(Notification.objects.filter(status=Notification.Status.DEAD).values_list("id", flat=True))
        if not ids:
            raise CommandError("name notification ids, or pass --dead")
        queued: list[int] = []
        for notification_id in ids:
            try:
                notification_resend(notification_id=notification_id)
            except Notification.DoesNotExist:
                self.stderr.write(f"notification {notification_id}: no such notification")
                continue
            except NotificationError as exc:
                self.stderr.write(f"notification {notification_id}: {exc.detail}")
                continue
            queued.append(notification_id)
        attempted = deliver_due_notifications(ids=queued) if queued else 0
        sent = Notification.objects.filter(id__in=queued, status=Notification.Status.SENT).count()
        self.stdout.write(f"queued {len(queued)}, attempted {attempted}, sent {sent}")
