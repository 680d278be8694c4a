"""Forwards outbox rows to Kafka. One relay is active per database; others wait as standby.
`--once` publishes what is pending and exits; SIGTERM finishes the batch in hand and exits. While the
database is away it backs off and resumes by itself."""

from __future__ import annotations

import signal
import threading
from typing import Any

import psycopg
from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from apps.outbox import outage
from apps.outbox.kafka.client import KafkaNotConfigured
from apps.outbox.kafka.relay import OutboxRelay, PublishFailed, backlog
from apps.outbox.progress import CommandProgress

DATABASE_ERRORS = (OperationalError, InterfaceError, outage.DatabaseUnavailable, psycopg.Error)


class Command(BaseCommand):
    help = "Relay outbox messages to Kafka (at least once, in delivery order)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="publish what is pending, then exit")
        parser.add_argument("--bootstrap-servers", default=None, help="default: KAFKA_BOOTSTRAP_SERVERS")
        parser.add_argument("--batch-size", type=int, default=None, help="default: KAFKA_RELAY_BATCH_SIZE")
        parser.add_argument(
            "--progress-seconds",
            type=float,
            default=5.0,
            help="seconds between progress lines (published so far, backlog); default 5",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with CommandProgress(self.stdout, "published") as progress:
            relay: OutboxRelay | None = None
            stopping = threading.Event()

            def report(line: str) -> None:
                progress.line(line)
                if relay is not None:
                    progress.update(relay.stats.published)

            def build() -> OutboxRelay:
                try:
                    return OutboxRelay(
                        servers=options["bootstrap_servers"],
                        batch_size=options["batch_size"],
                        progress_seconds=options["progress_seconds"],
                        report=report,
                    )
                except KafkaNotConfigured as exc:
                    raise CommandError(str(exc)) from exc

            def stop(*_: Any) -> None:
                stopping.set()
                if relay is not None:
                    relay.stop()

            relay = build()
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            failures = 0
            while True:
                try:
                    stats = relay.run(once=options["once"])
                    break
                except (PublishFailed, *DATABASE_ERRORS) as exc:
                    # Lost the lease connection or the database (an outage): back off, take the lease again
                    # and go on from the oldest unpublished row; what was acknowledged but not marked is resent.
                    if (
                        options["once"]
                        or stopping.is_set()
                        or not (outage.is_database_error(exc) or "lock connection" in str(exc))
                    ):
                        raise CommandError(f"relay failed: {exc}; {relay.stats.summary()}") from exc
                    failures += 1
                    delay = outage.backoff_seconds(failures)
                    progress.line(f"relay interrupted ({exc!r}); retrying in {delay:.1f}s")
                    outage.reset_connection()
                    if stopping.wait(delay):
                        return
                    relay = build()
            progress.summary(f"relay stopped: {stats.summary()} {backlog()}")
