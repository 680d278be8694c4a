"""Real server processes for the reliability tests: `manage.py serve`, `manage.py runserver` or gunicorn,
on a free loopback port, against the test database (or any DATABASE_URL, e.g. through a TCP proxy).

Each process connects with its own `application_name`, so a test can count that process's connections in
pg_stat_activity."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = {
    "serve": lambda port: [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}"],
    "runserver": lambda port: [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
    "gunicorn": lambda port: [
        sys.executable,
        "-m",
        "gunicorn",
        "escrow_project.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        "16",
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url(*, host: str | None = None, port: int | None = None, application_name: str = "") -> str:
    """The test database as a URL, optionally through another host/port (a proxy)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"])
    url = f"postgres://{credentials}@{host or db['HOST'] or '127.0.0.1'}:{port or db['PORT'] or 5432}/{db['NAME']}"
    return url + (f"?application_name={application_name}" if application_name else "")


class ServerProcess:
    def __init__(
        self, kind: str, logs: Path, *, env: dict[str, str] | None = None, database: str | None = None
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.application_name = f"escrow-test-{kind}-{uuid.uuid4().hex[:8]}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        environment.update(
            {
                "DEBUG": "0",
                "DATABASE_URL": database or database_url(application_name=self.application_name),
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        environment.update(env or {})
        self.log_path = logs / f"{self.application_name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            COMMANDS[kind](self.port), cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, limit_seconds: float = 60.0) -> None:
        """Until /api/v1/health answers (a bound on a broken start, not a speed expectation)."""
        deadline = time.monotonic() + limit_seconds
        while True:
            assert self.process.poll() is None, f"{self.kind} exited:\n{self.log()}"
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{self.kind} never answered:\n{self.log()}"
            time.sleep(0.1)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def connections_of(application_name: str) -> int:
    """This process's connections to PostgreSQL right now (a fresh pg_stat_activity snapshot)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return int(cursor.fetchone()[0])
