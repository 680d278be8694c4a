"""Forwards outbox rows to Kafka. One relay is active per database; others wait as standby.
`--once` publishes what is pending and exits; SIGTERM finishes the batch in hand and exits."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.outbox.kafka.client import KafkaNotConfigured
from apps.outbox.kafka.relay import OutboxRelay, PublishFailed, backlog
from apps.outbox.progress import CommandProgress


class Command(BaseCommand):
    help = "Relay outbox messages to Kafka (at least once, in delivery order)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="publish what is pending, then exit")
        parser.add_argument("--bootstrap-servers", default=None, help="default: KAFKA_BOOTSTRAP_SERVERS")
        parser.add_argument("--batch-size", type=int, default=None, help="default: KAFKA_RELAY_BATCH_SIZE")
        parser.add_argument("--progress-seconds", type=float, default=5.0,
                            help="seconds between progress lines (published so far, backlog); default 5")

    def handle(self, *args: Any, **options: Any) -> None:
        with CommandProgress(self.stdout, "published") as progress:
            relay: OutboxRelay | None = None

            def report(line: str) -> None:
                progress.line(line)
                if relay is not None:
                    progress.update(relay.stats.published)

            try:
                relay = OutboxRelay(servers=options["bootstrap_servers"], batch_size=options["batch_size"],
                                    progress_seconds=options["progress_seconds"], report=report)
            except KafkaNotConfigured as exc:
                raise CommandError(str(exc)) from exc
            signal.signal(signal.SIGTERM, lambda *_: relay.stop())
            signal.signal(signal.SIGINT, lambda *_: relay.stop())
            try:
                stats = relay.run(once=options["once"])
            except PublishFailed as exc:
                raise CommandError(f"relay failed: {exc}; {relay.stats.summary()}") from exc
            progress.summary(f"relay stopped: {stats.summary()} {backlog()}")
