"""Telling a lost database from a failing handler, and backing off until it is back.

A handler that fails is retried and then dead-lettered; a database that went away (refused, dropped or
unreachable connection, no free pool connection) is no handler's fault: the bus worker, the relay and
the consumers leave the message where it is (checkpoint, outbox row, Kafka offset unmoved) and try again
later, so an outage loses nothing and dead-letters nothing."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """Raised out of a bus pass when its database connection was lost: the pass stops, the worker backs off."""


def is_database_error(exc: BaseException | None) -> bool:
    """Django's wrapped connection errors, or psycopg's own (the LISTEN and lease connections are raw)."""
    if isinstance(exc, (OperationalError, InterfaceError, DatabaseUnavailable)):
        return True
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def connection_lost(exc: BaseException) -> bool:
    """The error came from the database connection and the connection no longer works (as opposed to, say,
    a deadlock or a serialization failure on a healthy connection, which is a handler failure to retry)."""
    if not is_database_error(exc):
        return False
    if connection.connection is None or connection.in_atomic_block:
        return True
    try:
        return not connection.is_usable()
    except Exception:  # noqa: BLE001 - the probe failing is the answer
        return True


def connection_broken() -> bool:
    """This thread's connection was lost under it (the server ended it, the network dropped), as its driver
    saw it when the last statement failed: known at once, before any rollback or reconnect."""
    raw = connection.connection
    return raw is not None and bool(getattr(raw, "broken", False) or getattr(raw, "closed", False))


def backoff_seconds(failures: int) -> float:
    """0.5 s, 1 s, 2 s, ... up to DATABASE_BACKOFF_MAX_SECONDS between attempts while the database is away."""
    return min(settings.DATABASE_BACKOFF_MAX_SECONDS, 0.5 * (2 ** max(0, failures - 1)))


def reset_connection() -> None:
    """Drops this thread's connection (broken ones are discarded by the pool) so the next use reconnects."""
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
        log.debug("closing a lost connection failed", exc_info=True)
