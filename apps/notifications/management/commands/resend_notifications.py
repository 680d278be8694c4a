"""Ops: queue dead (or failed, or skipped) notifications again and send them now.

manage.py resend_notifications --dead --staff USERNAME --reason TEXT     every dead notification
manage.py resend_notifications 12 15 --staff USERNAME --reason TEXT      these notifications

A staff action: one AuditLog row per run.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from apps.core.public import AuditLog, StaffCommand
from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.models import Notification
from apps.notifications.services import NotificationError, notification_resend


class Command(StaffCommand):
    help = "Resend dead, failed or skipped notifications (their past attempts stay recorded)."
    audit_action = AuditLog.Action.RESEND_NOTIFICATION

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("ids", nargs="*", type=int, help="notification ids")
        parser.add_argument("--dead", action="store_true", help="every dead notification")

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[int] = list(options["ids"])
        if options["dead"]:
            ids += list(Notification.objects.filter(status=Notification.Status.DEAD).values_list("id", flat=True))
        if not ids:
            raise CommandError("name notification ids, or pass --dead")
        target = "notifications " + ("dead" if options["dead"] else str(options["ids"]))
        with self.audited(options, target=target) as detail:
            self._resend(ids, detail)

    def _resend(self, ids: list[int], detail: dict[str, Any]) -> None:
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
        detail.update(named=len(ids), queued=queued, attempted=attempted, sent=sent)
        self.stdout.write(f"queued {len(queued)}, attempted {attempted}, sent {sent}")
