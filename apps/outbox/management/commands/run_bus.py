"""Runs the bus worker: delivers outbox messages to this deployment's subscribers and fires escrow
timers. `--once` drains what is there and exits (for scripts and cron)."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand

from apps.outbox.reader import lag
from apps.outbox.registry import outbox_subscribers
from apps.outbox.worker import BusWorker, registered_ticks


class Command(BaseCommand):
    help = "Deliver outbox messages to in-process subscribers and fire escrow timers."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="drain what is pending, then exit")
        parser.add_argument("--no-timers", action="store_true", help="do not fire escrow timers")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = BusWorker(
            ticks=registered_ticks(leave_out=frozenset({"timers"}) if options["no_timers"] else frozenset())
        )
        if options["once"]:
            handled = worker.run_once()
            lags = {sub.name: lag(sub) for sub in outbox_subscribers()}
            self.stdout.write(f"handled {handled} messages; lag now {lags}")
            return
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        signal.signal(signal.SIGINT, lambda *_: worker.stop())
        worker.run_forever()
        self.stdout.write(f"stopped after {worker.passes} passes, {worker.handled} messages handled")
