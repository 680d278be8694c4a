"""Revocation of access tokens without a database read per request, and, with Redis, without a round trip.

An access token (allauth's headless JWT) is verified by its signature and claims alone. What can end it
before its `exp` is kept in the shared cache (CACHE_URL: Redis in production, the database's cache table
in the embedded default):

- a **session** that ended (sign-out, sign-out everywhere, a session deleted by ops or expired and
  cleared): every token bound to it (its `sid`) is refused;
- a **user** whose standing changed (deactivated, deleted, password changed, staff flag or staff groups
  changed): every token issued to them before that moment is refused; tokens issued afterwards work.

Entries live AUTH_TOKEN_MAX_LIFETIME_SECONDS, and a token whose own lifetime is longer is refused, so an
entry can never be forgotten while a token it revokes is still alive. The check never falls back to a
database query: if the cache cannot be read, the request is refused with a 503 (fail closed), and if a
revocation cannot be written (or, with Redis, announced) the action that caused it fails loudly.

**The per-process copy (Redis only).** Every revocation is also published on a Redis channel (the cache's
key prefix + `auth:revocations`). Each serving process keeps a copy of the entries it has read, answered
locally, while a thread of that process is subscribed to the channel and has heard from it (a message,
or the reply to the ping it sends every AUTH_REVOCATION_STREAM_PING_SECONDS) within the last
AUTH_REVOCATION_STREAM_STALE_SECONDS. So:

- a revocation takes effect at once in the process that wrote it, and in every other process as soon as
  its message arrives (pub/sub on the same Redis: usually well under a millisecond);
- if the stream breaks, stalls or cannot be subscribed, the process stops trusting its copy (on the
  error at once, on a silent stall within AUTH_REVOCATION_STREAM_STALE_SECONDS, 2 s by default) and reads
  the shared cache on every request, as without the copy, until it is subscribed again; the copy is
  emptied whenever the subscription is lost, so nothing read before a gap is trusted after it. A
  revocation lost with a broken connection is therefore enforced everywhere within that bound;
- an entry read from the cache is trusted at most AUTH_REVOCATION_LOCAL_SECONDS (60 s) before it is read
  again, which also bounds the copy's memory (and it is emptied past AUTH_REVOCATION_LOCAL_MAX_ENTRIES).

Knowledge only grows: a session once revoked stays revoked and a user's revocation time only moves
forward, so a message and a read racing each other merge into the most revoked answer, never the less.
AUTH_REVOCATION_STREAM=0 turns the copy off (one read of the cache per request). The embedded default
(the database's cache table) has no stream and reads the table on every request.

The cache must not evict these keys (Redis: `maxmemory-policy noeviction` or `volatile-*` with room);
docs/operations.md says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from typing import Any

# redis-py is imported with the app (at worker boot), not by a worker's first request.
import redis
from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed

_SESSION = "auth:revoked:session:"
_USER = "auth:revoked:user:"
_PREFIX = "auth:revoked:"
_CHANNEL = "auth:revocations"

log = logging.getLogger(__name__)


def now_us() -> int:
    """Wall-clock microseconds: the issue time of tokens we mint, and the time of a user's revocation."""
    return time.time_ns() // 1000


def _session_key(session_key: str) -> str:
    # The session key is a bearer secret of its own: only its digest goes to the cache.
    return _SESSION + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def _user_key(user_id: object) -> str:
    return f"{_USER}{user_id}"


def revoke_session(session_key: str) -> None:
    _write(_session_key(session_key), 1)


def revoke_user(user_id: object) -> None:
    """Every token issued to this user until now stops working."""
    _write(_user_key(user_id), now_us())


def _write(key: str, value: int) -> None:
    cache.set(key, value, timeout=settings.AUTH_TOKEN_MAX_LIFETIME_SECONDS)
    redis_url = _redis_url()
    if redis_url is None:
        return
    mirror = _current_mirror(redis_url)
    if mirror is not None:
        mirror.learn(key, value)  # this process: at once, whatever the stream does
    # The other processes: raises if it cannot be announced (the write above stays: fail closed).
    cache._cache.get_client(key, write=True).publish(_channel(), json.dumps({"k": key, "v": value}))  # type: ignore[attr-defined]


def is_revoked(*, user_id: object, session_key: str, issued_us: int) -> bool:
    """From this process's copy when it can be trusted, else one read of the shared cache. Raises whatever
    the cache raises when it cannot be read."""
    keys = (_session_key(session_key), _user_key(user_id))
    redis_url = _redis_url()
    mirror = _current_mirror(redis_url) if redis_url is not None else None
    found = mirror.get_many(keys) if mirror is not None else cache.get_many(keys)
    if found.get(keys[0]) is not None:
        return True
    revoked_at = found.get(keys[1])
    return revoked_at is not None and issued_us <= int(revoked_at)


def start() -> None:
    """Subscribes this process to the revocation stream now (the WSGI module calls it at worker boot),
    so the first requests need not wait for it. Nothing to do without Redis or with the stream off."""
    redis_url = _redis_url()
    if redis_url is not None:
        _current_mirror(redis_url)


# --- the per-process copy ---------------------------------------------------------------------------------


def _channel() -> str:
    return cache.make_key(_CHANNEL)


def _redis_url() -> str | None:
    """The Redis the shared cache lives on (its first, writable, server), or None: not Redis."""
    config = settings.CACHES["default"]
    if config.get("BACKEND") != "django.core.cache.backends.redis.RedisCache":
        return None
    location = config.get("LOCATION")
    first = location[0] if isinstance(location, list | tuple) else str(location).replace(";", ",").split(",")[0]
    return first.strip() or None


_mirror_lock = threading.Lock()
_mirror: Mirror | None = None


def _current_mirror(redis_url: str) -> Mirror | None:
    """This process's copy for the cache now configured, made (and its subscriber started) on first use;
    a new one after a fork or a change of the cache's settings. None when the stream is turned off."""
    global _mirror
    if not settings.AUTH_REVOCATION_STREAM:
        return None
    channel = _channel()
    mirror = _mirror
    if mirror is not None and mirror.pid == os.getpid() and mirror.url == redis_url and mirror.channel == channel:
        return mirror
    with _mirror_lock:
        mirror = _mirror
        if mirror is None or mirror.pid != os.getpid() or mirror.url != redis_url or mirror.channel != channel:
            if mirror is not None and mirror.pid == os.getpid():
                mirror.stop()
            mirror = _mirror = Mirror(
                redis_url,
                channel,
                ping_seconds=settings.AUTH_REVOCATION_STREAM_PING_SECONDS,
                stale_seconds=settings.AUTH_REVOCATION_STREAM_STALE_SECONDS,
                entry_seconds=settings.AUTH_REVOCATION_LOCAL_SECONDS,
                max_entries=settings.AUTH_REVOCATION_LOCAL_MAX_ENTRIES,
            )
            mirror.start()
        return mirror


def _reset(*, setting: str, **kwargs: Any) -> None:
    """A test's (or a reload's) change of the cache or of these settings: the next check builds a new copy."""
    global _mirror
    if setting == "CACHES" or setting.startswith("AUTH_REVOCATION_"):
        with _mirror_lock:
            if _mirror is not None:
                _mirror.stop()
            _mirror = None


setting_changed.connect(_reset, dispatch_uid="gateway.revocation.reset")


def _merge(old: Any, new: Any) -> Any:
    """The more revoked of two answers: any revocation beats none, and a user's later revocation time
    beats an earlier one (a session's value is always 1)."""
    if old is None:
        return new
    if new is None:
        return old
    return max(int(old), int(new))


class Mirror:
    """A process's copy of the revocation entries it has read, kept current by a Redis pub/sub subscriber
    thread. `get_many` answers from it only while the subscriber is live (subscribed and heard from within
    `stale_seconds`); otherwise it reads the shared cache, as every request did before."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        ping_seconds: float,
        stale_seconds: float,
        entry_seconds: float,
        max_entries: int,
    ) -> None:
        self.url, self.channel, self.pid = url, channel, os.getpid()
        self.ping_seconds, self.stale_seconds = ping_seconds, stale_seconds
        self.entry_seconds, self.max_entries = entry_seconds, max_entries
        self._lock = threading.Lock()
        # key -> (trusted until, on the monotonic clock; the cache's value, None for "not revoked")
        self._entries: dict[str, tuple[float, Any]] = {}
        self._subscribed = False
        self._epoch = 0  # moves on every (re)subscription and every loss of it
        self._heard_at = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.reads = 0  # reads of the shared cache made through this copy (tests, diagnostics)

    # -- answering ----------------------------------------------------------------------------------------

    def live(self) -> bool:
        return self._subscribed and time.monotonic() - self._heard_at < self.stale_seconds

    def get_many(self, keys: tuple[str, ...]) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            live = self._subscribed and now - self._heard_at < self.stale_seconds
            epoch = self._epoch
            known = {k: e[1] for k in keys if (e := self._entries.get(k)) is not None and e[0] > now} if live else {}
        missing = [k for k in keys if k not in known]
        if not missing:
            return {k: v for k, v in known.items() if v is not None}
        self.reads += 1
        fetched = cache.get_many(missing)
        answer = {k: v for k, v in known.items() if v is not None}
        with self._lock:
            # Kept only if the subscription held throughout the read: a message lost in a gap could
            # otherwise leave a stale "not revoked" trusted.
            keep = live and self._epoch == epoch and self._subscribed
            if keep and len(self._entries) + len(missing) > self.max_entries:
                self._entries.clear()
            for key in missing:
                value = fetched.get(key)
                current = self._entries.get(key)
                if current is not None and current[0] > now:
                    value = _merge(current[1], value)  # a message that arrived during the read
                if keep:
                    self._entries[key] = (now + self.entry_seconds, value)
                if value is not None:
                    answer[key] = value
        return answer

    def learn(self, key: str, value: Any) -> None:
        """A revocation written or announced: merged into the copy at once."""
        if not key.startswith(_PREFIX):
            return
        now = time.monotonic()
        with self._lock:
            current = self._entries.get(key)
            merged = _merge(current[1] if current is not None and current[0] > now else None, value)
            self._entries[key] = (now + self.entry_seconds, merged)

    # -- the subscriber -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="revocation-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._lost()

    def _lost(self) -> None:
        with self._lock:
            self._subscribed = False
            self._epoch += 1
            self._entries.clear()

    def _run(self) -> None:
        backoff = 0.1
        warned = False
        while not self._stopping.is_set():
            pubsub = None
            try:
                client = redis.Redis.from_url(
                    self.url,
                    socket_connect_timeout=max(self.stale_seconds, 1.0),
                    socket_timeout=max(self.stale_seconds, 1.0) + self.ping_seconds,
                )
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                pinged_at = connected_at = time.monotonic()
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=self.ping_seconds)
                    now = time.monotonic()
                    if message is not None:
                        self._heard(message, now)
                        if message["type"] == "subscribe":
                            backoff, warned = 0.1, False
                    if now - max(self._heard_at, connected_at) >= self.stale_seconds:
                        raise ConnectionError("the revocation stream went quiet")  # no answer to its pings
                    if now - pinged_at >= self.ping_seconds:
                        pubsub.ping()
                        pinged_at = now
            except Exception as exc:  # noqa: BLE001 - any failure: distrust the copy, read the cache, retry
                if not warned:
                    log.warning(
                        "revocation stream lost; reading the shared cache per request until it is back",
                        extra={"error": type(exc).__name__},
                    )
                    warned = True
            finally:
                self._lost()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001, S110 - closing a broken connection
                        pass
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _heard(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            with self._lock:
                # Nothing read before the subscription is trusted after it.
                self._entries.clear()
                self._epoch += 1
                self._subscribed = True
                self._heard_at = now
            return
        if kind == "message":
            try:
                data = json.loads(message["data"])
                self.learn(str(data["k"]), int(data["v"]))
            except (ValueError, TypeError, KeyError):
                log.warning("revocation stream: a message that is not a revocation was ignored")
        with self._lock:
            self._heard_at = now
