"""manage.py healthcheck [--kafka] [--url URL]: exits 0 when this process's dependencies answer (the
container health checks in deploy/compose.yaml): the database (SELECT 1), the Kafka bootstrap servers
(a TCP connection) and, with --url, an HTTP endpoint answering 200."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection


class Command(BaseCommand):
    help = "Exit 0 if the database (and, if asked, Kafka and an HTTP endpoint) answer; 1 otherwise."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--kafka", action="store_true", help="also connect to KAFKA_BOOTSTRAP_SERVERS")
        parser.add_argument("--url", default="", help="also GET this URL and expect 200 (e.g. the API's /health)")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds for each check; default 5")

    def handle(self, *args: Any, **options: Any) -> None:
        timeout = options["timeout"]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
            raise CommandError(f"database: {type(exc).__name__}: {exc}") from exc
        if options["kafka"]:
            servers = [s.strip() for s in settings.KAFKA_BOOTSTRAP_SERVERS.split(",") if s.strip()]
            if not servers:
                raise CommandError("kafka: KAFKA_BOOTSTRAP_SERVERS is not set")
            for server in servers:
                host, _, port = server.rpartition(":")
                try:
                    socket.create_connection((host, int(port)), timeout=timeout).close()
                except (OSError, ValueError) as exc:
                    raise CommandError(f"kafka {server}: {exc}") from exc
        if options["url"]:
            try:
                with urllib.request.urlopen(options["url"], timeout=timeout) as response:  # noqa: S310 - our own URL
                    if response.status != 200:
                        raise CommandError(f"{options['url']}: HTTP {response.status}")
            except OSError as exc:
                raise CommandError(f"{options['url']}: {exc}") from exc
        self.stdout.write("healthy")
