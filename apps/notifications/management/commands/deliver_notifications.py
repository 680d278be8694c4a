"""Sends due notifications: `--once` for one pass (scripts, cron), otherwise a loop that polls.

The bus worker can run the same pass as a tick (`apps.notifications.public.deliver_due_notifications`);
this command is for deployments that send from a process of their own."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from apps.notifications.delivery import deliver_due_notifications

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Send due Discord DMs (retries included)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--poll-seconds", type=float, default=1.0)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            self.stdout.write(f"attempted {deliver_due_notifications()}")
            return
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        while not stopping.is_set():
            close_old_connections()
            try:
                attempted = deliver_due_notifications()
            except Exception:  # noqa: BLE001 - a failed pass (database away) must not end the sender
                log.exception("notification delivery pass failed")
                attempted = 0
            if not attempted:
                stopping.wait(options["poll_seconds"])
