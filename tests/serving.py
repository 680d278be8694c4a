"""A server started exactly as `make run` starts it (`manage.py serve 127.0.0.1:<free port>` in a
subprocess) on the test database, and headless Chromium to look at it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
NO_CHROMIUM = "headless Chromium not installed: apt-get install -y chromium chromium-driver (.ci/run does this)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """The URL of the database this test runs on (PostgreSQL: a second process can share it)."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextmanager
def served(*, env: dict[str, str] | None = None, ready_seconds: float = 60.0) -> Iterator[tuple[str, Any]]:
    """Yields (base URL, the server process) once /api/v1/health answers; stops the server after.
    The process's output (JSON log lines) is kept in a temporary file, read by `log_lines`."""
    port = free_port()
    full_env = {**os.environ, "DATABASE_URL": test_database_url(), "LOG_LEVEL": "INFO", **(env or {})}
    log = open(_log_path(port), "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_file = log  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_seconds
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log_text(proc)}"
            try:
                with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"serve did not answer within {ready_seconds}s:\n{log_text(proc)}"
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


def _log_path(port: int) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(prefix=f"serve-{port}-", suffix=".log")
    os.close(fd)
    return path


def log_text(proc: Any) -> str:
    proc.log_file.flush()
    return Path(proc.log_file.name).read_text(errors="replace")


def log_lines(proc: Any) -> list[dict[str, Any]]:
    """The server's JSON log lines so far."""
    return [json.loads(line) for line in log_text(proc).splitlines() if line.startswith("{")]


def wait_for_log(proc: Any, message: str, *, seconds: float = 30.0) -> dict[str, Any]:
    """The first log line with this message, waiting for it up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = next((line for line in log_lines(proc) if line.get("message") == message), None)
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"no {message!r} log line within {seconds}s:\n{log_text(proc)}"
        time.sleep(0.05)


@contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()
