"""Creates (or verifies) the catalog's Kafka topics and their dead-letter topics. Idempotent."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.outbox.kafka.admin import ensure_topics
from apps.outbox.kafka.catalog import all_topics
from apps.outbox.kafka.client import KafkaNotConfigured, bootstrap_servers


class Command(BaseCommand):
    help = "Create or verify the Kafka topics of the catalog (and <topic>.dlq)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--bootstrap-servers", default=None, help="default: KAFKA_BOOTSTRAP_SERVERS")
        parser.add_argument("--partitions", type=int, default=settings.KAFKA_TOPIC_PARTITIONS)
        parser.add_argument(
            "--replication-factor",
            type=int,
            default=settings.KAFKA_REPLICATION_FACTOR,
            help="3 in production, 1 in development",
        )
        parser.add_argument(
            "--min-insync-replicas",
            type=int,
            default=settings.KAFKA_MIN_INSYNC_REPLICAS,
            help="2 in production, 1 in development",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            servers = bootstrap_servers(options["bootstrap_servers"])
        except KafkaNotConfigured as exc:
            raise CommandError(str(exc)) from exc
        if options["partitions"] < 1 or options["replication_factor"] < 1:
            raise CommandError("--partitions and --replication-factor must be at least 1")
        if not 1 <= options["min_insync_replicas"] <= options["replication_factor"]:
            raise CommandError("--min-insync-replicas must be between 1 and --replication-factor")
        statuses = asyncio.run(
            ensure_topics(
                servers=servers,
                partitions=options["partitions"],
                replication_factor=options["replication_factor"],
                min_insync_replicas=options["min_insync_replicas"],
            )
        )
        specs = {spec.name: spec for spec in all_topics()}
        for status in statuses:
            verb = "created" if status.created else "exists "
            self.stdout.write(
                f"{verb} {status.name:28} partitions={status.partitions} "
                f"retention={specs[status.name].retention_days}d cleanup.policy=delete "
                f"replication={options['replication_factor']} "
                f"min.insync.replicas={options['min_insync_replicas']}"
            )
