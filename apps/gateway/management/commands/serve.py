"""The embedded default in one process: the bus worker thread (timers, catch-up) beside Django's
threaded development server. For production run gunicorn and `manage.py run_bus` separately."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from apps.outbox.public import BusWorker, registered_ticks


class Command(BaseCommand):
    help = "Serve the API with an in-process bus worker (the `make run` default)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = BusWorker(ticks=registered_ticks())
        threading.Thread(target=worker.run_forever, name="bus-worker", daemon=True).start()
        try:
            call_command("runserver", options["addrport"], use_reloader=False, use_threading=True)
        finally:
            worker.stop()
