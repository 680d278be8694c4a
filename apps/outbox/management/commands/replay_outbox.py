"""Re-publishes a range of the outbox to Kafka (after the broker lost data). Consumers dedupe by event id."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.outbox.kafka.client import KafkaNotConfigured
from apps.outbox.kafka.relay import PublishFailed
from apps.outbox.kafka.replay import replay_outbox, replay_selection
from apps.outbox.progress import CommandProgress


def _instant(value: str | None, flag: str) -> datetime.datetime | None:
    if value is None:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"{flag}: not an ISO 8601 date-time: {value!r}")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, datetime.UTC)


class Command(BaseCommand):
    help = "Re-publish outbox messages to Kafka: a time window, one escrow, one type."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--since", help="ISO 8601, inclusive (occurred_at)")
        parser.add_argument("--until", help="ISO 8601, exclusive (occurred_at)")
        parser.add_argument("--escrow", help="one escrow id")
        parser.add_argument("--type", dest="type_name", help="message type, short or full name")
        parser.add_argument("--bootstrap-servers", default=None, help="default: KAFKA_BOOTSTRAP_SERVERS")
        parser.add_argument("--batch-size", type=int, default=1000, help="rows published per batch; default 1000")
        parser.add_argument("--dry-run", action="store_true", help="count what would be replayed")

    def handle(self, *args: Any, **options: Any) -> None:
        since, until = _instant(options["since"], "--since"), _instant(options["until"], "--until")
        if since and until and since >= until:
            raise CommandError("--since must be before --until")
        rows = replay_selection(since=since, until=until, escrow_id=options["escrow"], type_name=options["type_name"])
        if options["dry_run"]:
            self.stdout.write(f"would replay {rows.count()} messages")
            return
        with CommandProgress(self.stdout, "replayed", total=rows.count()) as progress:
            try:
                stats = replay_outbox(
                    rows=rows,
                    servers=options["bootstrap_servers"],
                    batch_size=options["batch_size"],
                    report=progress.line,
                )
            except (KafkaNotConfigured, PublishFailed) as exc:
                raise CommandError(str(exc)) from exc
            progress.update(stats.published)
            progress.summary(f"replay done: {stats.summary()}")
