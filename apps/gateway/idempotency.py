"""The Idempotency-Key header on POST mutations (IETF httpapi draft semantics):

- same key, same body: the first response is replayed (with `Idempotent-Replayed: true`);
- same key, another body: 422;
- same key while the first request is still running: 409.

The record is written in the command's own transaction (one transaction per keyed command): the key's
lock (a transaction-level advisory lock on PostgreSQL, tried: a second request with the key while the
first runs is 409 at once), the read of an earlier record, the command, and the record of the answer.
So an answer is remembered exactly when the command committed. The command id is derived from the caller
and the key, so a retried command cannot take effect twice: the escrow service dedupes on the command
id. A request that fails unexpectedly (5xx) rolls back with its command and leaves no record, so the same
request takes the key again with the same command id. (Records written `in_flight` or `retry` by an
earlier version, which committed the record in a transaction of its own, are still honoured.)

Records expire IDEMPOTENCY_KEY_TTL_HOURS (24) after the first request, like Stripe's keys: the bus
worker's tick purges them (`idempotency_records_purge`), and a key met again after that, purged or not
yet, is a new request. Its command id is the next generation of the key (uuid5 over caller, key and
generation) that the escrow service has never applied, so it is not mistaken for the old command.

Only a decision about the escrow is remembered: an acceptance (2xx) or a refusal by the state machine
(403, 409). A request refused as invalid (400 and other 4xx) never reached a decision and changed
nothing, so its key is forgotten and the client may send a corrected request under the same key.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from apps.escrow.public import command_applied
from apps.gateway.auth import caller_id
from apps.gateway.models import IdempotencyRecord
from apps.gateway.problems import Problem, problem_response, to_problem
from apps.gateway.throttle import AtMostEvery

MAX_KEY_LENGTH = 255
KEY_NAMESPACE = uuid.UUID("0b6f8f0e-3c1a-4d7e-9a51-7d2f1c3b4a90")
# Refusals that are the state machine's decision about the escrow, replayed like an acceptance.
REMEMBERED_REFUSALS = frozenset({403, 409})
PURGE_BATCH = 1000

log = logging.getLogger(__name__)
_purge_due = AtMostEvery("IDEMPOTENCY_PURGE_EVERY_SECONDS")


def _expiry_cutoff() -> datetime.datetime:
    return timezone.now() - datetime.timedelta(hours=float(settings.IDEMPOTENCY_KEY_TTL_HOURS))


def _command_id(user_pk: object, key: str) -> uuid.UUID:
    """The key's first generation is uuid5(caller:key); a key used again after its record expired takes
    the first generation the escrow service has not applied."""
    generation = 0
    while True:
        name = f"{user_pk}:{key}" if generation == 0 else f"{user_pk}:{key}:{generation}"
        command_id = uuid.uuid5(KEY_NAMESPACE, name)
        if not command_applied(command_id):
            return command_id
        generation += 1


def idempotency_records_purge(*, force: bool = False) -> int:
    """Deletes records older than IDEMPOTENCY_KEY_TTL_HOURS, in batches; a bus worker tick (at most once
    per IDEMPOTENCY_PURGE_EVERY_SECONDS unless forced). Returns 0: a purge puts nothing on the bus."""
    if not _purge_due.due(force=force):
        return 0
    cutoff, purged = _expiry_cutoff(), 0
    while True:
        batch = list(IdempotencyRecord.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:PURGE_BATCH])
        if not batch:
            break
        purged += IdempotencyRecord.objects.filter(pk__in=batch, created_at__lt=cutoff).delete()[0]
    if purged:
        log.info("expired idempotency records purged", extra={"purged": purged})
    return 0


def _fingerprint(request: Request, raw_body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update((request.method or "").encode())
    digest.update(b"\0")
    digest.update(request.path.encode())
    digest.update(b"\0")
    digest.update(raw_body)
    return digest.hexdigest()


def run_idempotent(request: Request, raw_body: bytes, mutate: Callable[[uuid.UUID], Response]) -> Response:
    """Runs `mutate` under the request's Idempotency-Key, in ONE transaction with the command: the key's
    lock, its record, the command and the record of the answer commit together or not at all."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return _answer(mutate, uuid.uuid4())
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    fingerprint = _fingerprint(request, raw_body)
    user_id = caller_id(request)
    for _ in range(3):
        try:
            with transaction.atomic():
                return _run_once(user_id, key, fingerprint, mutate)
        except IntegrityError:
            # Another request with this key committed its record first (without the key's lock: SQLite, or
            # it committed between our lock and our read): look again, it is a replay now.
            continue
    raise Problem(409, "idempotency_key_in_flight", "a request with this Idempotency-Key is still being processed")


def _in_flight() -> Problem:
    return Problem(409, "idempotency_key_in_flight", "a request with this Idempotency-Key is still being processed")


def _lock_key(user_id: object, key: str) -> bool:
    """The key's lock for this transaction (PostgreSQL: a transaction-level advisory lock, tried, not
    waited for): held while the first request runs, so a second one is told 409 at once. SQLite has one
    writer at a time, so a second request waits for the first to commit and then replays it."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [f"idempotency:{user_id}:{key}"])
        row = cursor.fetchone()
    return bool(row and row[0])


def _run_once(user_id: int, key: str, fingerprint: str, mutate: Callable[[uuid.UUID], Response]) -> Response:
    if not _lock_key(user_id, key):
        raise _in_flight()
    existing = IdempotencyRecord.objects.filter(user_id=user_id, key=key).first()
    if existing is not None and existing.created_at < _expiry_cutoff():
        # Expired but not purged yet: the key is free again, for a new request.
        existing.delete()
        existing = None
    if existing is not None:
        if existing.fingerprint != fingerprint:
            raise Problem(422, "idempotency_key_reused", "this Idempotency-Key was used with another request")
        if existing.status == IdempotencyRecord.Status.IN_FLIGHT:
            # A record written by an earlier version, which committed it before running the command.
            raise _in_flight()
        if existing.status == IdempotencyRecord.Status.DONE:
            return _replay(existing)
    command_id = existing.command_id if existing is not None and existing.command_id else _command_id(user_id, key)
    response = _answer(mutate, command_id)
    if response.status_code >= 400 and response.status_code not in REMEMBERED_REFUSALS:
        # Refused as invalid: nothing was decided, the key is forgotten (a retry may fix the body).
        if existing is not None:
            existing.delete()
        return response
    answer = {
        "status": IdempotencyRecord.Status.DONE,
        "response_status": response.status_code,
        "response_body": response.data,
        "response_location": response.get("Location", ""),
    }
    if existing is not None:
        IdempotencyRecord.objects.filter(pk=existing.pk).update(**answer)
    else:
        IdempotencyRecord.objects.create(
            user_id=user_id, key=key, fingerprint=fingerprint, command_id=command_id, **answer
        )
    return response


def _replay(existing: IdempotencyRecord) -> Response:
    replay = Response(existing.response_body, status=existing.response_status)
    if existing.response_status and existing.response_status >= 400:
        replay.content_type = "application/problem+json"
    if existing.response_location:
        replay["Location"] = existing.response_location
    replay["Idempotent-Replayed"] = "true"
    return replay


def _answer(mutate: Callable[[uuid.UUID], Response], command_id: uuid.UUID) -> Response:
    """Runs the mutation; a domain refusal becomes its problem response (so it can be replayed too)."""
    try:
        return mutate(command_id)
    except Exception as exc:
        problem = to_problem(exc)
        if problem is None or problem.status_code >= 500:
            raise
        return problem_response(problem.status_code, problem.code, problem.detail, **problem.extra)
