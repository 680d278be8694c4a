"""The embedded default in one command: gunicorn (one worker process, a fixed pool of threads) serving the
API, the admin and the static files (WhiteNoise), with the bus worker (subscribers, timers, due
notifications, owed webhooks) as a thread of that worker process.

Why one process with threads: the bus worker must run exactly once beside the server, and a worker
process that gunicorn restarts gets its own bus thread again. The thread pool bounds the database
connections (one per thread plus the bus worker's), where Django's development server kept one per
request thread. Production runs `gunicorn escrow_project.wsgi` and `manage.py run_bus` as separate
processes (deploy/compose.yaml).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

log = logging.getLogger("apps.gateway.serve")


def parse_addrport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"not an address and port: {value!r} (expected HOST:PORT or PORT)")
    return host, int(port)


def gunicorn_logging() -> dict[str, Any]:
    """The project's JSON logging for gunicorn's own lines; requests are logged by the app's middleware
    (one structured line each), so gunicorn's access log stays off."""
    base: dict[str, Any] = dict(settings.LOGGING)
    config: dict[str, Any] = {**base, "disable_existing_loggers": False}
    config["loggers"] = {
        **base.get("loggers", {}),
        "gunicorn.error": {"level": "INFO", "propagate": True},
        "gunicorn.access": {"level": "WARNING", "propagate": True},
    }
    return config


class _BusBeside:
    """Starts the bus worker in the serving process once it has forked, stops it when it exits."""

    def __init__(self) -> None:
        self.worker: Any = None

    def start(self, _gunicorn_worker: Any) -> None:
        from apps.outbox.public import BusWorker, registered_ticks

        self.worker = BusWorker(ticks=registered_ticks())
        threading.Thread(target=self.worker.run_forever, name="bus-worker", daemon=True).start()

    def stop(self, *_: Any) -> None:
        if self.worker is not None:
            self.worker.stop()


class Command(BaseCommand):
    help = (
        "Serve the API, the admin and static files with gunicorn, and run the bus worker beside it "
        "(the `make run` default)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            default="127.0.0.1:8000",
            help="HOST:PORT (or PORT) to listen on; default 127.0.0.1:8000",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=8,
            help="request threads (each keeps at most one database connection); default 8",
        )
        parser.add_argument(
            "--timeout",
            type=int,
            default=60,
            help="seconds before an unresponsive worker process is restarted; default 60",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from django.core.wsgi import get_wsgi_application
        from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

        application = get_wsgi_application()

        host, port = parse_addrport(options["addrport"])
        bus = _BusBeside()
        config = {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": max(1, options["threads"]),
            "timeout": options["timeout"],
            "graceful_timeout": 10,
            "accesslog": None,
            "logconfig_dict": gunicorn_logging(),
            # Several servers may run on one machine (tests, a second checkout): no shared socket path.
            "control_socket_disable": True,
            "post_worker_init": bus.start,
            "worker_exit": lambda _server, worker: bus.stop(worker),
            "proc_name": "escrow-serve",
        }

        class Server(BaseApplication):
            def load_config(self) -> None:
                for key, value in config.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:
                return application

        # The worker is forked from this process: it must not inherit an open database connection.
        connections.close_all()
        log.info("serving", extra={"bind": config["bind"], "threads": config["threads"]})
        Server().run()
