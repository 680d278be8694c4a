from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.escrow.timers import fire_due_timers


class Command(BaseCommand):
    help = "Cancel escrows past their funding deadline and release those past their inspection period."

    def handle(self, *args: Any, **options: Any) -> None:
        fired = fire_due_timers()
        self.stdout.write(f"{fired} timers fired")
