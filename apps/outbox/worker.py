"""The bus worker: drains the outbox subscribers, fires due escrow timers, then sleeps until a commit
wakes it (in-process event, or PostgreSQL NOTIFY from other processes) or the poll interval passes.
After a crash it simply starts from each subscriber's committed checkpoint; while the database is away it
backs off (apps/outbox/outage.py) and resumes by itself, listening again once it is back.

What a pass runs besides draining (the ticks: escrow timers, due notifications, ...) is registered by
the project's wiring (escrow_project/bus.py) with `register_tick`; `run_bus` and `serve` read it with
`registered_ticks`."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections, connection

from apps.outbox import outage, wakeup
from apps.outbox.drain import drain, left_rows_held_back, worker_draining
from apps.outbox.registry import outbox_subscribers

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# How often a LISTEN wait looks up from the socket for stop() and in-process wakes.
_LISTEN_SLICE_SECONDS = 0.25

# How soon the worker comes back for rows its drain left behind an older open transaction (which may
# write no outbox row, and so announce nothing when it ends).
_HELD_BACK_RETRY_SECONDS = 0.1

# One unit of periodic work a pass runs after draining; returns how many things it did.
Tick = Callable[[], int]


@dataclass(frozen=True)
class _Registered:
    tick: Tick
    clocked: bool


# Periodic work the worker does after its drains (timers, owed DMs, owed follow-ups, ...), registered by
# the project's bus wiring (escrow_project/bus.py) so that the outbox imports no app above it.
_ticks: dict[str, _Registered] = {}


def register_tick(name: str, tick: Tick, *, clocked: bool = False) -> None:
    """`clocked`: the tick looks for work that falls due with time (timers, reminders, expiry), so a worker
    running on its own runs it at most once per poll interval, not after every pass (`ClockedTick`). A
    tick that is not clocked sends what the passes' messages owe (DMs, webhooks, follow-ups) and runs
    after every pass."""
    _ticks[name] = _Registered(tick, clocked)


def registered_ticks(*, leave_out: frozenset[str] = frozenset()) -> list[Tick]:
    """The registered ticks for one worker: a clocked one wrapped in a `ClockedTick` of its own, so that two
    workers (or a worker per test) never share a clock."""
    return [
        ClockedTick(entry.tick) if entry.clocked else entry.tick
        for name, entry in _ticks.items()
        if name not in leave_out
    ]


class ClockedTick:
    """A tick run at most once per `every` seconds while the worker runs on its own (`run_forever`).
    `BusWorker.run_once`, for scripts, cron and tests, runs every tick whatever its clock: what it promises
    is one whole pass. Its first call always runs."""

    def __init__(self, tick: Tick) -> None:
        self.tick = tick
        self.every: float = 0.0
        self._last: float | None = None

    def __call__(self) -> int:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            return 0
        self._last = now
        return self.tick()


class BusWorker:
    def __init__(self, *, ticks: list[Tick] | None = None, poll_seconds: float | None = None) -> None:
        self.ticks = ticks or []
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.BUS_POLL_SECONDS
        self.stopping = threading.Event()
        self.handled = 0
        self.passes = 0
        self.held_back_retries = 0  # passes that ended leaving rows behind an older open transaction
        self._listener: psycopg.Connection | None = None
        self._own_pids: deque[int] = deque(maxlen=64)
        self._clocked = [tick for tick in self.ticks if isinstance(tick, ClockedTick)]

    def stop(self) -> None:
        self.stopping.set()
        wakeup.announce()

    def run_once(self, *, on_clock: bool = False) -> int:
        """One pass: drain, run the ticks, and drain again only if a tick did something (the first drain
        already ended with a pass that found nothing). With `on_clock` (the worker running on its own), a
        clocked tick runs only if its poll interval has passed since it last ran."""
        for tick in self._clocked:
            tick.every = self.poll_seconds if on_clock else 0.0
        close_old_connections()
        handled = self._drain()
        ticked = sum(tick() for tick in self.ticks)
        if ticked:
            handled += ticked + self._drain()
        self.passes += 1
        self.handled += handled
        return handled

    @staticmethod
    def _drain() -> int:
        # The drain loops until a pass finds nothing, so the commits its own handlers make need no wake.
        with worker_draining():
            return drain()

    def run_forever(self) -> None:
        self._listen()
        # The first pass reads everything committed before it starts: an announcement left over from
        # before (a worker stopped in the middle of a pass leaves its stop() set) would only cost an
        # empty pass.
        wakeup.forget()
        log.info(
            "bus worker started",
            extra={"subscribers": [s.name for s in outbox_subscribers()], "poll_seconds": self.poll_seconds},
        )
        failures = 0
        try:
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    handled = self.run_once(on_clock=True)
                except Exception as exc:  # noqa: BLE001 - a worker pass failing must not end the worker
                    # The database away (or a pass failing for another reason): back off, then try again
                    # from the checkpoints, which the failed pass did not move past anything unapplied.
                    failures += 1
                    delay = outage.backoff_seconds(failures)
                    if outage.is_database_error(exc) or isinstance(exc, outage.DatabaseUnavailable):
                        log.warning(
                            "bus worker: database unavailable, will retry",
                            extra={"failures": failures, "retry_in_s": delay, "error": repr(exc)},
                        )
                    else:
                        log.exception("bus worker pass failed")
                    outage.reset_connection()
                    self.stopping.wait(delay)
                    continue
                if failures:
                    log.info("bus worker: database back", extra={"after_failures": failures})
                    failures = 0
                if self._listener is None:
                    self._listen()  # again, after the database came back
                if handled:
                    log.info(
                        "bus worker pass",
                        extra={
                            "handled": handled,
                            "total": self.handled,
                            "ms": round((time.perf_counter() - started) * 1000, 1),
                        },
                    )
                # Always wait: a commit made during the pass by anyone else has announced itself, so the
                # wait ends at once; an immediate extra pass would only find nothing, at ~4 statements
                # per subscriber.
                if left_rows_held_back():
                    self.held_back_retries += 1
                    self._wait(_HELD_BACK_RETRY_SECONDS)
                else:
                    self._wait(self.poll_seconds)
        finally:
            # A worker run in a thread owns its connections; leaving them open would hold a backend
            # (and block dropping the database) after the thread ends.
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            connection.close()
        log.info("bus worker stopped", extra={"handled": self.handled, "passes": self.passes})

    def _listen(self) -> None:
        if connection.vendor != "postgresql":
            return
        import psycopg

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        try:
            self._listener = psycopg.connect(**params, autocommit=True)
            self._listener.execute(f"LISTEN {wakeup.NOTIFY_CHANNEL}")
        except Exception:  # noqa: BLE001 - without LISTEN the worker still polls
            log.exception("LISTEN failed; polling only")
            self._listener = None

    def _wait(self, seconds: float) -> None:
        """Sleeps until a commit is announced (NOTIFY from any process, or this process's wake event),
        `stop()` is called, or `seconds` (at most the poll interval) pass.

        The LISTEN connection is waited on in short slices only so that the in-process event and
        `stop()` are seen promptly; a NOTIFY ends the wait at once, whatever the slice.

        Notifications sent by this worker's own database session are skipped: they announce commits its
        pass made, which the pass's drain loop has already read past. Once woken, every announcement
        already received is dropped: the next pass reads everything committed before it starts, so one
        commit seen twice (its in-process wake and its NOTIFY), or a burst of commits, costs one pass.
        """
        deadline = time.monotonic() + min(seconds, self.poll_seconds)
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._listener is None:
                wakeup.wait(remaining)
                break
            if wakeup.announced():
                break
            try:
                if self._foreign_notification(min(remaining, _LISTEN_SLICE_SECONDS)):
                    break
            except Exception:  # noqa: BLE001
                log.exception("LISTEN connection lost; polling only")
                self._listener = None
        self._drop_announcements()

    def _drop_announcements(self) -> None:
        wakeup.forget()
        if self._listener is None:
            return
        try:
            for _ in self._listener.notifies(timeout=0):
                pass
        except Exception:  # noqa: BLE001
            log.exception("LISTEN connection lost; polling only")
            self._listener = None

    def _foreign_notification(self, timeout: float) -> bool:
        if self._listener is None:
            return False
        # The pool may hand this thread another backend from one pass to the next, and an announcement of an
        # earlier pass's commit can arrive late: every backend this worker has used recently is its own. (A
        # commit by another thread of this process on such a backend still wakes it: in-process wake.)
        if connection.connection is not None:
            pid = connection.connection.info.backend_pid
            if pid not in self._own_pids:
                self._own_pids.append(pid)
        for note in self._listener.notifies(timeout=timeout):
            if note.pid not in self._own_pids:
                return True
        return False
