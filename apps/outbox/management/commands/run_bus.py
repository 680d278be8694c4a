"""Runs the bus worker: delivers outbox messages to this deployment's subscribers and fires escrow
timers. `--once` drains what is there and exits (for scripts and cron)."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand

from apps.discord.followups import send_due_followups
from apps.escrow.timers import fire_due_timers
from apps.notifications.public import deliver_due_notifications
from apps.outbox import bus
from apps.outbox.worker import BusWorker
from apps.payments.public import deliver_owed_webhooks


class Command(BaseCommand):
    help = "Deliver outbox messages to in-process subscribers and fire escrow timers."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="drain what is pending, then exit")
        parser.add_argument("--no-timers", action="store_true", help="do not fire escrow timers")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = BusWorker(ticks=[deliver_due_notifications, deliver_owed_webhooks, send_due_followups] if options["no_timers"] else [fire_due_timers, deliver_due_notifications, deliver_owed_webhooks, send_due_followups])
        if options["once"]:
            handled = worker.run_once()
            lags = {sub.name: bus.lag(sub) for sub in bus.outbox_subscribers()}
            self.stdout.write(f"handled {handled} messages; lag now {lags}")
            return
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        signal.signal(signal.SIGINT, lambda *_: worker.stop())
        worker.run_forever()
        self.stdout.write(f"stopped after {worker.passes} passes, {worker.handled} messages handled")
