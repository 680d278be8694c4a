"""Announcing commits to the bus. `publish` schedules `after_commit` once per transaction that wrote
outbox rows; the bus registers what runs then (its wake-up and inline drain). The worker waits on the
same event. Keeping this below both `publish` and `bus` is what lets neither import the other's caller."""

from __future__ import annotations

import threading
from collections.abc import Callable

# The PostgreSQL LISTEN/NOTIFY channel a commit that wrote outbox rows announces itself on.
NOTIFY_CHANNEL = "outbox"

# Set after a commit in this process (and to interrupt the worker's wait); cleared by whoever waits.
event = threading.Event()

_on_commit: list[Callable[[], None]] = []


def on_commit(func: Callable[[], None]) -> None:
    """Registers what runs after a commit that wrote outbox rows (the bus's `wake`)."""
    if func not in _on_commit:
        _on_commit.append(func)


def after_commit() -> None:
    if not _on_commit:
        event.set()
    for func in list(_on_commit):
        func()


def wait(timeout: float) -> bool:
    """Sleeps until a commit is announced or `timeout` passes; True if one was."""
    woke = event.wait(timeout)
    event.clear()
    return woke
