"""Exactly one active relay: whoever holds the lock publishes, the others wait as standby.

On PostgreSQL it is a session advisory lock on a dedicated connection, so it is released the moment
the holder's process dies (its connection closes) and a standby takes over. On SQLite (development,
one machine) it is an exclusive file lock, also released by the kernel when the process dies.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import zlib
from pathlib import Path
from typing import IO, Any

from django.db import connection

RELAY_LOCK_NAME = "outbox:kafka-relay"


class RelayLease:
    def __init__(self, name: str = RELAY_LOCK_NAME) -> None:
        self.name = name
        self._pg: Any = None
        self._file: IO[bytes] | None = None

    def try_acquire(self) -> bool:
        if connection.vendor == "postgresql":
            return self._try_pg()
        return self._try_file()

    def _try_pg(self) -> bool:
        import psycopg

        if self._pg is None:
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            self._pg = psycopg.connect(**params, autocommit=True)
        row = self._pg.execute("SELECT pg_try_advisory_lock(%s)", [zlib.crc32(self.name.encode())]).fetchone()
        return bool(row and row[0])

    def _try_file(self) -> bool:
        db_name = str(connection.settings_dict["NAME"])
        # An in-memory database belongs to one process, so its lock does too.
        in_memory = not db_name or db_name.startswith((":memory:", "file:")) or "mode=memory" in db_name
        stem = f"memory-{os.getpid()}" if in_memory else Path(db_name).name
        path = Path(tempfile.gettempdir()) / f"escrow-{stem}-{os.getuid()}.{self.name.replace(':', '-')}.lock"
        handle = open(path, "wb")  # noqa: SIM115 - held open for the lease's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def still_held(self) -> bool:
        """False if the lock connection died (then another relay may already be active)."""
        if self._pg is not None:
            try:
                self._pg.execute("SELECT 1")
            except Exception:  # noqa: BLE001 - any failure means we cannot prove we hold it
                return False
        return True

    def release(self) -> None:
        if self._pg is not None:
            try:
                # Unlock before closing: a closed socket is released by the server only once the
                # backend notices, and a standby polling at that moment would be refused.
                self._pg.execute("SELECT pg_advisory_unlock_all()")
            except Exception:  # noqa: BLE001 - a dead connection holds nothing any more
                pass
            try:
                self._pg.close()
            finally:
                self._pg = None
        if self._file is not None:
            self._file.close()
            self._file = None
