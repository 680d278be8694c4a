"""The Idempotency-Key header on POST mutations (IETF httpapi draft semantics):

- same key, same body: the first response is replayed (with `Idempotent-Replayed: true`);
- same key, another body: 422;
- same key while the first request is still running: 409.

The command id is derived from the caller and the key, so even a lost record cannot make a retried
command take effect twice: the escrow service dedupes on the command id.

Only a decision about the escrow is remembered: an acceptance (2xx) or a refusal by the state machine
(403, 409). A request refused as invalid (400 and other 4xx) never reached a decision and changed
nothing, so its key is forgotten and the client may send a corrected request under the same key.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

from django.db import IntegrityError, transaction
from rest_framework.request import Request
from rest_framework.response import Response

from apps.gateway.models import IdempotencyRecord
from apps.gateway.problems import Problem, problem_response, to_problem

MAX_KEY_LENGTH = 255
KEY_NAMESPACE = uuid.UUID("0b6f8f0e-3c1a-4d7e-9a51-7d2f1c3b4a90")
# Refusals that are the state machine's decision about the escrow, replayed like an acceptance.
REMEMBERED_REFUSALS = frozenset({403, 409})


def _fingerprint(request: Request, raw_body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0")
    digest.update(request.path.encode())
    digest.update(b"\0")
    digest.update(raw_body)
    return digest.hexdigest()


def run_idempotent(request: Request, raw_body: bytes, mutate: Callable[[uuid.UUID], Response]) -> Response:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return _answer(mutate, uuid.uuid4())
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(400, "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    fingerprint = _fingerprint(request, raw_body)
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(user=request.user, key=key, fingerprint=fingerprint)
    except IntegrityError:
        existing = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
        if existing is None:
            # The first request was just refused as invalid and forgot its key: it was in flight a moment ago.
            raise Problem(409, "idempotency_key_in_flight", "a request with this Idempotency-Key is still being processed") from None
        if existing.fingerprint != fingerprint:
            raise Problem(422, "idempotency_key_reused", "this Idempotency-Key was used with another request") from None
        if existing.status == IdempotencyRecord.Status.IN_FLIGHT:
            raise Problem(409, "idempotency_key_in_flight", "a request with this Idempotency-Key is still being processed") from None
        replay = Response(existing.response_body, status=existing.response_status)
        if existing.response_status and existing.response_status >= 400:
            replay.content_type = "application/problem+json"
        if existing.response_location:
            replay["Location"] = existing.response_location
        replay["Idempotent-Replayed"] = "true"
        return replay
    command_id = uuid.uuid5(KEY_NAMESPACE, f"{request.user.pk}:{key}")
    try:
        response = _answer(mutate, command_id)
    except BaseException:
        # Unexpected failure: forget the key so that the client can retry it.
        record.delete()
        raise
    if response.status_code >= 400 and response.status_code not in REMEMBERED_REFUSALS:
        record.delete()
        return response
    record.status = IdempotencyRecord.Status.DONE
    record.response_status = response.status_code
    record.response_body = response.data
    record.response_location = response.get("Location", "")
    record.save(update_fields=["status", "response_status", "response_body", "response_location"])
    return response


def _answer(mutate: Callable[[uuid.UUID], Response], command_id: uuid.UUID) -> Response:
    """Runs the mutation; a domain refusal becomes its problem response (so it can be replayed too)."""
    try:
        return mutate(command_id)
    except Exception as exc:
        problem = to_problem(exc)
        if problem is None or problem.status_code >= 500:
            raise
        return problem_response(problem.status_code, problem.code, problem.detail, **problem.extra)
