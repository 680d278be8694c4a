"""Waiting for another process's commit without polling the database: read-your-writes.

A request that has committed a command waits (bounded) until the projections show it. Polling costs
two queries every few milliseconds per waiting thread; instead the writer announces the escrow it
changed (`announce`, a PostgreSQL NOTIFY sent when its transaction commits) and one LISTEN connection per
process wakes the threads waiting on that escrow. Each waiter still checks the database itself: a
notification only says "look again". A waiter whose notification is lost (the listener's connection
broke) looks again every `_SAFETY_SLICE_SECONDS`, and a process without a listener (SQLite, LISTEN
refused) polls as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from django.db import connection

log = logging.getLogger(__name__)

CHANNEL = "escrow_changed"
_POLL_SECONDS = 0.005
_SAFETY_SLICE_SECONDS = 0.1
_RESTART_AFTER_SECONDS = 1.0


def announce(escrow_id: str) -> None:
    """Inside the writer's transaction: wakes the waiters on this escrow once it commits (PostgreSQL
    delivers a NOTIFY at commit and drops it on rollback). Nothing on other databases."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(escrow_id)])


def close_listener() -> None:
    """Stops this process's listener, if one runs (before dropping a database, at shutdown)."""
    _Listener.shutdown()


def wait_for(escrow_id: str, check: Callable[[], bool], *, timeout_seconds: float) -> bool:
    """Returns True as soon as `check()` is true, False if it is still false after `timeout_seconds`.
    `check` runs on the calling thread's connection, first at once, then after each announcement of
    this escrow."""
    deadline = time.monotonic() + timeout_seconds
    listener = _Listener.for_process() if connection.vendor == "postgresql" else None
    if listener is None:
        while True:
            if check():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)
    key = str(escrow_id)
    event = listener.register(key)
    try:
        while True:
            # Registered before this check: an announcement made after it sets the event.
            if check():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event.wait(min(remaining, _SAFETY_SLICE_SECONDS))
            event.clear()
    finally:
        listener.unregister(key, event)


class _Listener:
    """This process's LISTEN connection, on a daemon thread, started on first use (after a fork, so
    each gunicorn worker has its own)."""

    _instance: _Listener | None = None
    _guard = threading.Lock()
    _failed_at = 0.0

    @classmethod
    def for_process(cls) -> _Listener | None:
        with cls._guard:
            current = cls._instance
            if current is not None and current.pid == os.getpid() and current.alive:
                return current
            if time.monotonic() - cls._failed_at < _RESTART_AFTER_SECONDS:
                return None
            listener = cls(connection.get_connection_params())
            if not listener.ready.wait(2.0) or not listener.alive:
                cls._failed_at = time.monotonic()
                return None
            cls._instance = listener
            return listener

    def __init__(self, params: dict) -> None:
        self.pid = os.getpid()
        self.params = {k: v for k, v in params.items() if k not in ("cursor_factory", "context")}
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.alive = True
        self._waiters: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="escrow-changed-listener", daemon=True)
        self._thread.start()

    @classmethod
    def shutdown(cls) -> None:
        """Closes this process's listener (its connection would otherwise keep the database in use)."""
        with cls._guard:
            current, cls._instance = cls._instance, None
        if current is not None:
            current.stopping.set()
            current._thread.join(5.0)

    def register(self, key: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(key, set()).add(event)
        return event

    def unregister(self, key: str, event: threading.Event) -> None:
        with self._lock:
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[key]

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(**self.params, autocommit=True) as listen:
                listen.execute(f"LISTEN {CHANNEL}")
                self.ready.set()
                while not self.stopping.is_set():
                    for note in listen.notifies(timeout=0.5):
                        with self._lock:
                            for event in self._waiters.get(note.payload, ()):
                                event.set()
        except Exception:  # noqa: BLE001 - waiters fall back to their safety slice, the next one restarts it
            log.exception("escrow_changed listener stopped")
        finally:
            self.alive = False
            self.ready.set()
            with self._lock:
                for waiting in self._waiters.values():
                    for event in waiting:
                        event.set()
