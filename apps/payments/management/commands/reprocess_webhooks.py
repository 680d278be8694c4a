"""Processes again the stored webhooks that failed (or were received and never finished). A staff action:
`--staff USERNAME --reason TEXT`, one AuditLog row per run."""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone

from apps.core.public import AuditLog, StaffCommand
from apps.outbox.public import CommandProgress
from apps.payments import webhooks
from apps.payments.models import WebhookEvent


class Command(StaffCommand):
    help = "Reprocess failed webhooks (and received ones older than a minute)."
    audit_action = AuditLog.Action.REPROCESS_WEBHOOKS

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "ids",
            nargs="*",
            type=int,
            help="webhook record ids to process again, whatever their status (default: every "
            "failed one, and received ones older than a minute)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        target = f"webhooks {options['ids']}" if options["ids"] else "webhooks failed or unfinished"
        with self.audited(options, target=target) as detail:
            self._reprocess(options, detail)

    def _reprocess(self, options: dict[str, Any], detail: dict[str, Any]) -> None:
        stale = timezone.now() - datetime.timedelta(minutes=1)
        records = WebhookEvent.objects.filter(status=WebhookEvent.Status.FAILED) | WebhookEvent.objects.filter(
            status=WebhookEvent.Status.RECEIVED, received_at__lt=stale
        )
        if options["ids"]:
            records = WebhookEvent.objects.filter(pk__in=options["ids"])
        records = records.order_by("id")
        total = records.count()
        errors = 0
        outcomes: dict[str, int] = {}
        with CommandProgress(self.stdout, "webhooks", total=total) as progress:
            for index, record in enumerate(records, start=1):
                try:
                    outcome = webhooks.reprocess(record)
                    result = outcome.status
                    outcomes[result] = outcomes.get(result, 0) + 1
                except Exception as exc:  # noqa: BLE001 - reported per record
                    errors += 1
                    result = f"error: {exc!r}"
                progress.line(
                    f"[{index}/{total}] {record.provider} {record.event_type} {record.provider_event_id}: {result}"
                )
                progress.advance()
            detail.update(considered=total, errors=errors, outcomes=outcomes)
            progress.summary(f"{total} webhooks reprocessed, {errors} errors")
