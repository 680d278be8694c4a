"""`POST /api/v1/discord/interactions`: Discord's HTTP interactions endpoint.

The signature is checked over the raw body before anything else is read (401 if it does not hold, as
Discord requires); a signed body that is not an interaction is 400; with no DISCORD_PUBLIC_KEY the
endpoint does not exist (404)."""

from __future__ import annotations

import json
import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps.discord import interactions, signature

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def _problem(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse(
        {"type": "about:blank", "title": detail, "status": status, "code": code, "detail": detail},
        status=status,
        content_type=PROBLEM,
    )


@csrf_exempt
def interactions_endpoint(request: HttpRequest) -> JsonResponse:
    key = signature.public_key()
    if key is None:
        return _problem(404, "not_found", "no such resource")
    if request.method != "POST":
        response = _problem(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
        response["Allow"] = "POST"
        return response
    try:
        signature.verify(
            key=key,
            signature=request.headers.get("X-Signature-Ed25519"),
            timestamp=request.headers.get("X-Signature-Timestamp"),
            body=request.body,
        )
    except signature.SignatureRejected as exc:
        return _problem(401, "invalid_signature", f"invalid request signature: {exc}")
    try:
        interaction = interactions.parse(json.loads(request.body))
    except (ValueError, UnicodeDecodeError):
        return _problem(400, "malformed_interaction", "the body is not JSON")
    except interactions.Malformed as exc:
        return _problem(400, "malformed_interaction", str(exc))
    return JsonResponse(interactions.answer(interaction))
