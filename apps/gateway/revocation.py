"""Revocation of access tokens without a database read per request.

An access token (allauth's headless JWT) is verified by its signature and claims alone. What can end it
before its `exp` is kept in the shared cache (CACHE_URL: Redis in production, the database's cache table
in the embedded default), and every authenticated request reads it there in one round trip (one MGET):

- a **session** that ended (sign-out, sign-out everywhere, a session deleted by ops or expired and
  cleared): every token bound to it (its `sid`) is refused;
- a **user** whose standing changed (deactivated, deleted, password changed, staff flag or staff groups
  changed): every token issued to them before that moment is refused; tokens issued afterwards work.

Entries live AUTH_TOKEN_MAX_LIFETIME_SECONDS, and a token whose own lifetime is longer is refused, so an
entry can never be forgotten while a token it revokes is still alive. The check never falls back to a
database query: if the cache cannot be read, the request is refused with a 503 (fail closed), and if a
revocation cannot be written the action that caused it fails loudly.

The cache must not evict these keys (Redis: `maxmemory-policy noeviction` or `volatile-*` with room);
docs/operations.md says so.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

_SESSION = "auth:revoked:session:"
_USER = "auth:revoked:user:"


def now_us() -> int:
    """Wall-clock microseconds: the issue time of tokens we mint, and the time of a user's revocation."""
    return time.time_ns() // 1000


def _session_key(session_key: str) -> str:
    # The session key is a bearer secret of its own: only its digest goes to the cache.
    return _SESSION + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def _user_key(user_id: object) -> str:
    return f"{_USER}{user_id}"


def revoke_session(session_key: str) -> None:
    cache.set(_session_key(session_key), 1, timeout=settings.AUTH_TOKEN_MAX_LIFETIME_SECONDS)


def revoke_user(user_id: object) -> None:
    """Every token issued to this user until now stops working."""
    cache.set(_user_key(user_id), now_us(), timeout=settings.AUTH_TOKEN_MAX_LIFETIME_SECONDS)


def is_revoked(*, user_id: object, session_key: str, issued_us: int) -> bool:
    """One read of the shared cache. Raises whatever the cache raises when it cannot be read."""
    keys = (_session_key(session_key), _user_key(user_id))
    found = cache.get_many(keys)
    if keys[0] in found:
        return True
    revoked_at = found.get(keys[1])
    return revoked_at is not None and issued_us <= int(revoked_at)
