"""What drf-spectacular leaves out of the OpenAPI document, added by postprocessing hooks:

- the routes it cannot see: the provider webhooks and /metrics are plain Django views (the webhook
  verifier needs the raw body untouched by DRF), and the schema and docs views leave themselves out;
- every error answer: one reusable `Problem` schema (RFC 9457, application/problem+json) and, per
  operation, the 4xx statuses the API can give it (`document_problems`), so a client or a contract check
  finds every answer it can get in the document.
"""

from __future__ import annotations

from typing import Any

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details. `code` is stable; validation errors list `errors`, state-machine "
    "refusals carry the escrow's `state`, rate limits `retry_after` (seconds).",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "state": {"type": "string"},
        "retry_after": {"type": "number", "nullable": True},
        "errors": {
            "type": "array",
            "items": {"type": "object", "properties": {"field": {"type": "string"}, "detail": {"type": "string"}}},
        },
    },
    "additionalProperties": True,
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
WHY = {
    400: "invalid request: a field, a query parameter, the JSON or the Idempotency-Key (`errors` names them)",
    401: "no Bearer token, or an invalid, expired or revoked one",
    403: "the caller may not do this (not their side of the escrow, or staff only)",
    404: "no such resource for this caller (another user's escrow is 404 too)",
    409: "refused by the escrow's current state (`state`), or the Idempotency-Key is still in flight",
    412: "`version_not_reached`: the read model has not reached `min_version` yet (`Retry-After`; or send "
    "`Prefer: wait=N`)",
    413: "the request body is too large",
    415: "the body is not in a media type this operation accepts",
    422: "the Idempotency-Key was already used with another request",
    429: "too many requests; `Retry-After` says when to try again",
    503: "not ready (the database cannot be reached)",
}
_MUTATIONS = frozenset({"post", "put", "patch", "delete"})


def _problem(status: int) -> dict[str, Any]:
    return {"description": WHY[status], "content": {"application/problem+json": {"schema": PROBLEM_REF}}}


def _webhook(provider: str, *signature_headers: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"webhook_{provider}",
            "summary": f"Signature-verified {provider} webhook",
            "description": f"Called by {provider}, not by users. The raw body is verified against the "
            f"{', '.join(signature_headers)} header(s) before anything is trusted.",
            "tags": ["webhooks"],
            "security": [],
            "parameters": [
                {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                for name in signature_headers
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {
                    "description": "accepted (a duplicate delivery is accepted too, with no second effect)",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {
                    **_problem(400),
                    "description": "missing, forged or stale signature, or a body that is not the provider's event",
                },
                "404": {**_problem(404), "description": "this provider is not enabled in this deployment"},
                "413": _problem(413),
            },
        }
    }


def _discord_interactions() -> dict[str, Any]:
    return {
        "post": {
            "operationId": "discord_interactions",
            "summary": "Discord's HTTP interactions endpoint (slash commands, buttons, modals)",
            "description": "Called by Discord, not by users: Ed25519 over X-Signature-Timestamp + the raw body, "
            "with DISCORD_PUBLIC_KEY. PING answers PONG.",
            "tags": ["webhooks"],
            "security": [],
            "parameters": [
                {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                for name in ("X-Signature-Ed25519", "X-Signature-Timestamp")
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {
                    "description": "the interaction response (type 1 PONG, 4 message, 5 deferred, ...)",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {**_problem(400), "description": "a body that is not a Discord interaction"},
                "401": {**_problem(401), "description": "missing, forged or stale signature"},
                "404": {**_problem(404), "description": "Discord is not configured in this deployment"},
            },
        }
    }


def _plain_get(operation_id: str, summary: str, media_type: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["operations"],
            "security": [],
            "responses": {"200": {"description": summary, "content": {media_type: {"schema": {"type": "string"}}}}},
        }
    }


def document_plain_routes(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    paths = result.setdefault("paths", {})
    paths.setdefault("/api/v1/webhooks/stripe", _webhook("stripe", "Stripe-Signature"))
    paths.setdefault("/api/v1/webhooks/custodian", _webhook("custodian", "X-Circle-Signature", "X-Circle-Key-Id"))
    paths.setdefault("/api/v1/discord/interactions", _discord_interactions())
    paths.setdefault("/api/v1/metrics", _plain_get("metrics", "Prometheus metrics", "text/plain"))
    paths.setdefault(
        "/api/v1/schema", _plain_get("schema", "This OpenAPI 3 document", "application/vnd.oai.openapi+json")
    )
    paths.setdefault("/api/v1/docs", _plain_get("docs", "Swagger UI", "text/html"))
    paths.setdefault("/api/v1/redoc", _plain_get("redoc", "ReDoc", "text/html"))
    return result


def _statuses(path: str, method: str, operation: dict[str, Any], global_security: Any) -> set[int]:
    """The 4xx answers this operation can give (see `WHY`)."""
    security = operation.get("security", global_security) or []
    authenticated = bool(security) and {} not in security
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    mutation = method in _MUTATIONS
    statuses: set[int] = set()
    if has_body or mutation or any(p.get("in") == "query" for p in parameters):
        statuses.add(400)
    if authenticated:
        statuses.add(401)
        if mutation:
            statuses.add(403)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if authenticated and mutation:
        statuses |= {409, 429}
        if method == "post":
            statuses.add(422)  # the Idempotency-Key reused with another body
    if has_body:
        statuses |= {413, 415}
    if any(p.get("in") == "query" and p.get("name") == "min_version" for p in parameters):
        statuses.add(412)
    return statuses


def document_problems(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the `Problem` schema, and each operation's problem answers
    (an answer the view already documents is kept as it is)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    global_security = result.get("security", [])
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in sorted(_statuses(path, method, operation, global_security)):
                responses.setdefault(str(status), _problem(status))
    paths = result.get("paths", {})
    ready = paths.get("/api/v1/ready", {}).get("get")
    if ready is not None:
        ready["responses"].setdefault("503", _problem(503))
    metrics = paths.get("/api/v1/metrics", {}).get("get")
    if metrics is not None:  # METRICS_TOKEN, or loopback only (apps/gateway/metrics.py)
        metrics["responses"].setdefault("401", _problem(401))
        metrics["responses"].setdefault(
            "403", {**_problem(403), "description": "not from this host, and no METRICS_TOKEN is set"}
        )
    return result
