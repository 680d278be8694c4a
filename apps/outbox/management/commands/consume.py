"""Runs one app's subscriber from Kafka (consumer group = the app). Switch the app off in the web
process first (BUS_OUTBOX_SUBSCRIBERS), so it is never fed twice."""

from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.outbox.kafka.client import KafkaNotConfigured
from apps.outbox.kafka.consumer import AppConsumer
from apps.outbox.progress import CommandProgress
from apps.outbox.registry import get_subscriber, subscribers


class Command(BaseCommand):
    help = "Consume an app's messages from Kafka with its bus handlers."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("app", help="subscriber name: " + ", ".join(sorted(s.name for s in subscribers())))
        parser.add_argument("--bootstrap-servers", default=None, help="default: KAFKA_BOOTSTRAP_SERVERS")
        parser.add_argument("--group", default=None, help="consumer group (default: the app name)")
        parser.add_argument(
            "--until-caught-up", action="store_true", help="exit once every assigned partition is read to its end"
        )
        parser.add_argument(
            "--allow-double-feed",
            action="store_true",
            help="run even though this settings module also feeds the app from the outbox",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        app = options["app"]
        try:
            get_subscriber(app)
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        if app in settings.BUS_OUTBOX_SUBSCRIBERS and not options["allow_double_feed"]:
            self.stderr.write(
                f"warning: {app!r} is also in BUS_OUTBOX_SUBSCRIBERS here; make sure the web "
                "process and bus worker run with it removed, or the app is fed twice "
                "(deduped per source, but processed twice)."
            )
        with CommandProgress(self.stdout, f"{app} received") as progress:
            consumer: AppConsumer | None = None

            def report(line: str) -> None:
                progress.line(line)
                if consumer is not None:
                    progress.update(consumer.stats.received)

            try:
                consumer = AppConsumer(
                    app=app, servers=options["bootstrap_servers"], group_id=options["group"], report=report
                )
            except KafkaNotConfigured as exc:
                raise CommandError(str(exc)) from exc
            signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
            signal.signal(signal.SIGINT, lambda *_: consumer.stop())
            stats = consumer.run(until_caught_up=options["until_caught_up"])
            progress.summary(f"consumer {app} stopped: {stats.summary()}")
