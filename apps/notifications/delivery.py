"""Sending owed notifications as Discord DMs, outside any database transaction.

A pass (`deliver_due_notifications`) claims due rows in a short transaction (SKIP LOCKED, so several
senders never claim the same row), sends them with discord.py's HTTP client with no transaction open,
then records each attempt and the row's next state in a short transaction of its own.

- Transient errors (429, 5xx, timeouts, connection errors) are retried with exponential backoff, never
  sooner than the `retry_after` Discord asked for. discord.py itself waits out short rate limits
  (up to its 30 s minimum `max_ratelimit_timeout`) and retries within the same attempt; longer ones
  come back as `RateLimited` and are scheduled.
- Permanent errors (the user does not accept DMs: 403 code 50007; unknown user) are recorded and the
  notification is FAILED, never retried automatically.
- After NOTIFY_MAX_ATTEMPTS transient failures the notification is DEAD: ops see it in the admin and
  resend it with `manage.py resend_notifications`.
- Every send carries a nonce derived from the event and the user with `enforce_nonce`, so Discord
  creates one message even if a sender crashed between sending and recording and the row is sent again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import logging
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import discord
from discord.http import HTTPClient, Route, handle_message_parameters
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.notifications.kinds import LOCKED_ON
from apps.notifications.models import DeliveryAttempt, DiscordLink, Notification, NotificationPreference

log = logging.getLogger(__name__)

_DEFAULT_DISCORD_BASE = Route.BASE
# Discord error codes that will not change by retrying: the user does not accept DMs from the bot,
# unknown user, unknown channel, missing access.
PERMANENT_DISCORD_CODES = frozenset({50007, 10013, 10003, 50001, 50278})
# A claim outlives the longest send; after it a crashed sender's rows are claimed again.
_CLAIM_MARGIN_SECONDS = 30.0

T = TypeVar("T")


@dataclass
class SendResult:
    outcome: str
    http_status: int | None = None
    discord_code: int | None = None
    retry_after: float | None = None
    detail: str = ""
    message_id: str = ""
    http_log: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Claimed:
    notification_id: int
    discord_user_id: int
    text: str
    nonce: str
    attempt: int
    components: list[dict[str, Any]] = field(default_factory=list)


def discord_api_base() -> str:
    """discord.py builds every URL from the class attribute `Route.BASE`; pointing it at
    DISCORD_API_BASE (a local fake in tests) is the library's own way to change the API root."""
    base = (settings.DISCORD_API_BASE or _DEFAULT_DISCORD_BASE).rstrip("/")
    Route.BASE = base
    return base


def nonce_for(*, event_id: uuid.UUID, user_id: int) -> str:
    # Discord nonces are at most 25 characters.
    return uuid.uuid5(event_id, f"dm:{user_id}").hex[:25]


# --- claiming and recording (short transactions) --------------------------------------------------


def _due(now: datetime.datetime) -> Q:
    return Q(status=Notification.Status.PENDING, next_attempt_at__lte=now) | Q(
        status=Notification.Status.SENDING, claimed_until__lt=now
    )


def _skip(notification: Notification, reason: str, now: datetime.datetime) -> None:
    notification.attempts += 1
    DeliveryAttempt.objects.create(
        notification=notification,
        number=_next_number(notification),
        outcome=DeliveryAttempt.Outcome.SKIPPED,
        detail=reason,
        started_at=now,
        finished_at=now,
    )
    notification.status = Notification.Status.SKIPPED
    notification.last_error = reason
    notification.claimed_until = None
    notification.save(update_fields=["status", "last_error", "claimed_until", "attempts"])


def _next_number(notification: Notification) -> int:
    return DeliveryAttempt.objects.filter(notification=notification).count() + 1


def _muted(notification: Notification) -> bool:
    if notification.kind in LOCKED_ON:
        return False
    return NotificationPreference.objects.filter(
        user_id=notification.user_id, kind=notification.kind, enabled=False
    ).exists()


def claim_due(*, limit: int, ids: list[int] | None = None) -> list[Claimed]:
    """Claims up to `limit` due notifications for this sender. The Discord account and the user's
    preference are read now, at send time, never taken from the event."""
    now = timezone.now()
    lease = datetime.timedelta(seconds=settings.DISCORD_SEND_TIMEOUT_SECONDS + _CLAIM_MARGIN_SECONDS)
    claimed: list[Claimed] = []
    with transaction.atomic():
        rows = Notification.objects.filter(_due(now)).order_by("next_attempt_at", "id")
        if ids is not None:
            rows = rows.filter(id__in=ids)
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        for notification in rows[:limit]:
            link = DiscordLink.objects.filter(user_id=notification.user_id).first()
            if link is None:
                _skip(notification, "no linked Discord account", now)
                continue
            if _muted(notification):
                _skip(notification, "muted by the user's preferences", now)
                continue
            notification.status = Notification.Status.SENDING
            notification.claimed_until = now + lease
            notification.save(update_fields=["status", "claimed_until"])
            claimed.append(
                Claimed(
                    notification_id=notification.pk,
                    discord_user_id=link.discord_user_id,
                    text=notification.text,
                    nonce=nonce_for(event_id=notification.event_id, user_id=notification.user_id),
                    attempt=notification.attempts + 1,
                    components=list(notification.components or []),
                )
            )
    return claimed


def _backoff_seconds(attempt: int, retry_after: float | None) -> float:
    backoff = min(settings.NOTIFY_RETRY_BASE_SECONDS * (2 ** (attempt - 1)), settings.NOTIFY_RETRY_MAX_SECONDS)
    return max(backoff, retry_after or 0.0)


def record_result(*, claim: Claimed, result: SendResult, started_at: datetime.datetime) -> Notification:
    now = timezone.now()
    with transaction.atomic():
        notification = Notification.objects.select_for_update().get(pk=claim.notification_id)
        if notification.status != Notification.Status.SENDING:
            # Our claim expired and another sender took the row over; its record wins.
            log.warning("notification claim lost", extra={"notification_id": notification.pk})
            return notification
        notification.attempts += 1
        DeliveryAttempt.objects.create(
            notification=notification,
            number=_next_number(notification),
            outcome=result.outcome,
            http_status=result.http_status,
            discord_code=result.discord_code,
            retry_after_seconds=result.retry_after,
            detail=result.detail[:500],
            http_log=result.http_log,
            started_at=started_at,
            finished_at=now,
        )
        notification.claimed_until = None
        notification.last_error = "" if result.outcome == DeliveryAttempt.Outcome.SENT else result.detail[:500]
        if result.outcome == DeliveryAttempt.Outcome.SENT:
            notification.status = Notification.Status.SENT
            notification.sent_at = now
            notification.discord_message_id = result.message_id
        elif result.outcome == DeliveryAttempt.Outcome.PERMANENT:
            notification.status = Notification.Status.FAILED
        elif notification.attempts >= settings.NOTIFY_MAX_ATTEMPTS:
            notification.status = Notification.Status.DEAD
            log.error("notification dead", extra={"notification_id": notification.pk, "error": result.detail})
        else:
            notification.status = Notification.Status.PENDING
            delay = _backoff_seconds(notification.attempts, result.retry_after)
            notification.next_attempt_at = now + datetime.timedelta(seconds=delay)
        notification.save()
    return notification


# --- sending (no transaction open) ----------------------------------------------------------------


@dataclass
class _Exchanges:
    """What the HTTP trace saw during one send: every exchange, and the last rate limit's wait (so that
    a send cut short while discord.py waits out a 429 still honours `retry_after`)."""

    log: list[str] = field(default_factory=list)
    retry_after: float | None = None


_exchanges: contextvars.ContextVar[_Exchanges | None] = contextvars.ContextVar("discord_exchanges", default=None)


async def _on_request_end(session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
    seen = _exchanges.get()
    if seen is None:
        return
    seen.log.append(f"{params.method} {params.url.path} {params.response.status}")
    if params.response.status == 429:
        headers = params.response.headers
        for name in ("X-RateLimit-Reset-After", "Retry-After"):
            try:
                seen.retry_after = float(headers[name])
                break
            except (KeyError, ValueError):
                continue


async def _on_request_exception(session: Any, ctx: Any, params: aiohttp.TraceRequestExceptionParams) -> None:
    seen = _exchanges.get()
    if seen is not None:
        seen.log.append(f"{params.method} {params.url.path} {type(params.exception).__name__}")


def _classify(exc: BaseException) -> SendResult:
    if isinstance(exc, discord.RateLimited):
        return SendResult(DeliveryAttempt.Outcome.TRANSIENT, 429, None, exc.retry_after, f"rate limited: {exc}")
    if isinstance(exc, discord.HTTPException):
        status, code = exc.status, exc.code or None
        retry_after = None
        if status == 429:
            retry_after = _retry_after_header(exc.response)
        permanent = code in PERMANENT_DISCORD_CODES or status in (400, 403, 404)
        outcome = (
            DeliveryAttempt.Outcome.PERMANENT if permanent and status != 429 else DeliveryAttempt.Outcome.TRANSIENT
        )
        if status == 401:
            # A bad bot token is ours to fix, not the user's: keep it retryable (and dead-letter it).
            outcome = DeliveryAttempt.Outcome.TRANSIENT
        return SendResult(outcome, status, code, retry_after, f"{status} {code or ''} {exc.text}".strip())
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return SendResult(DeliveryAttempt.Outcome.TRANSIENT, None, None, None, "timed out")
    if isinstance(exc, discord.LoginFailure):
        return SendResult(DeliveryAttempt.Outcome.TRANSIENT, 401, None, None, "the bot token was refused")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return SendResult(DeliveryAttempt.Outcome.TRANSIENT, None, None, None, f"connection error: {exc!r}")
    raise exc


def _retry_after_header(response: Any) -> float | None:
    value = getattr(response, "headers", {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _send_one(http: HTTPClient, claim: Claimed, timeout_seconds: float) -> SendResult:
    seen = _Exchanges()
    token = _exchanges.set(seen)
    try:
        async with asyncio.timeout(timeout_seconds):
            channel = await http.start_private_message(claim.discord_user_id)
            params = handle_message_parameters(content=claim.text, nonce=claim.nonce)
            if claim.components and params.payload is not None:
                # Raw components (buttons with custom ids and link buttons), as Discord's API takes them;
                # discord.py's View objects are for a gateway bot that handles the clicks itself.
                params.payload["components"] = claim.components
            message = await http.send_message(channel["id"], params=params)
        return SendResult(DeliveryAttempt.Outcome.SENT, 200, message_id=str(message.get("id", "")), http_log=seen.log)
    except Exception as exc:  # noqa: BLE001 - classified below; anything unknown is re-raised
        result = _classify(exc)
        result.http_log = seen.log
        if result.retry_after is None and seen.retry_after is not None:
            # Timed out while discord.py was waiting out a rate limit: the next try waits for it too.
            result.retry_after = seen.retry_after
            result.http_status = result.http_status or 429
        return result
    finally:
        _exchanges.reset(token)


async def _send_all(
    claims: list[Claimed], timeout_seconds: float
) -> list[tuple[Claimed, SendResult, datetime.datetime]]:
    discord_api_base()
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_request_end)
    trace.on_request_exception.append(_on_request_exception)
    http = HTTPClient(asyncio.get_running_loop(), http_trace=trace, max_ratelimit_timeout=30.0)
    results: list[tuple[Claimed, SendResult, datetime.datetime]] = []
    try:
        try:
            async with asyncio.timeout(timeout_seconds):
                await http.static_login(settings.DISCORD_BOT_TOKEN)
        except Exception as exc:  # noqa: BLE001 - the whole pass fails alike; every claim records it
            failure = _classify(exc)
            now = timezone.now()
            return [(claim, failure, now) for claim in claims]
        for claim in claims:
            started = timezone.now()
            results.append((claim, await _send_one(http, claim, timeout_seconds), started))
    finally:
        await http.close()
    return results


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# A request thread delivering right after its commit gives Discord this long at most; what is not sent
# by then (a long rate limit, a slow Discord) is left to the delivery loop, with its retry_after kept.
ON_COMMIT_TIMEOUT_SECONDS = 5.0


def deliver_due_notifications(
    *, limit: int = 100, ids: list[int] | None = None, timeout_seconds: float | None = None
) -> int:
    """One delivery pass; returns how many notifications it attempted to send. The delivery loop, a bus
    worker tick and the after-commit hook call it; it must never run inside a transaction."""
    if connection.in_atomic_block:
        raise RuntimeError("deliver_due_notifications sends over the network: call it outside a transaction")
    if not settings.DISCORD_BOT_TOKEN:
        return 0
    claims = claim_due(limit=limit, ids=ids)
    if not claims:
        return 0
    timeout = timeout_seconds if timeout_seconds is not None else settings.DISCORD_SEND_TIMEOUT_SECONDS
    for claim, result, started in _run(_send_all(claims, timeout)):
        record_result(claim=claim, result=result, started_at=started)
    return len(claims)


_after_commit = threading.local()


def deliver_after_commit(notification_ids: list[int]) -> None:
    """Sends these notifications right after the current transaction commits (one pass per
    transaction), and only these: a request thread never works through someone else's backlog."""
    if not settings.NOTIFY_DELIVER_ON_COMMIT or not notification_ids:
        return
    pending: list[int] = getattr(_after_commit, "ids", None) or []
    pending.extend(notification_ids)
    _after_commit.ids = pending
    # Each entry is (savepoint ids, function, robust).
    if any(entry[1] is _deliver_robustly for entry in connection.run_on_commit):
        return
    transaction.on_commit(_deliver_robustly)


def _deliver_robustly() -> None:
    # Runs after the caller's commit: a Discord failure must not turn the caller's answer into an
    # error; whatever was not sent stays due for the delivery loop. Ids left over from a rolled-back
    # transaction match no row and cost nothing.
    ids, _after_commit.ids = getattr(_after_commit, "ids", None) or [], []
    try:
        deliver_due_notifications(
            ids=ids, timeout_seconds=min(settings.DISCORD_SEND_TIMEOUT_SECONDS, ON_COMMIT_TIMEOUT_SECONDS)
        )
    except Exception:  # noqa: BLE001
        log.exception("notification delivery pass failed")
