"""Announcing commits to the bus. `publish` schedules `after_commit` once per transaction that wrote
outbox rows; the bus registers what runs then (`drain.wake`: announce, and drain inline if so configured).
The worker waits for an announcement (`wait`, `announced`, `forget`). Keeping this below both `publish`
and `drain` is what lets neither import the other's caller."""

from __future__ import annotations

import threading
from collections.abc import Callable

# The PostgreSQL LISTEN/NOTIFY channel a commit that wrote outbox rows announces itself on.
NOTIFY_CHANNEL = "outbox"

# Set after a commit in this process (and to interrupt the worker's wait); cleared by whoever waits.
_event = threading.Event()

_on_commit: list[Callable[[], None]] = []


def on_commit(func: Callable[[], None]) -> None:
    """Registers what runs after a commit that wrote outbox rows (the bus's `wake`)."""
    if func not in _on_commit:
        _on_commit.append(func)


def after_commit() -> None:
    if not _on_commit:
        announce()
    for func in list(_on_commit):
        func()


def announce() -> None:
    """Tells a waiting worker that something was committed (or that it should look up: `stop()`)."""
    _event.set()


def announced() -> bool:
    """Whether an announcement is waiting to be picked up."""
    return _event.is_set()


def forget() -> None:
    """Drops the announcements received so far (the next pass reads everything committed before it)."""
    _event.clear()


def wait(timeout: float) -> bool:
    """Sleeps until a commit is announced or `timeout` passes; True if one was. Picks the announcement up."""
    woke = _event.wait(timeout)
    _event.clear()
    return woke
