"""RFC 9457 problem details: every error the API gives is `application/problem+json` with a stable
`code`. Domain errors are mapped here, once."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from apps.escrow.public import EscrowError, EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed

CONTENT_TYPE = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """An error answer raised from a view."""

    def __init__(self, status_code: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.extra = extra


def problem_body(status_code: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"urn:escrow:problem:{code}",
        "title": TITLES.get(status_code, "Error"),
        "status": status_code,
        "code": code,
        "detail": detail,
        **extra,
    }


def problem_response(status_code: int, code: str, detail: str, **extra: Any) -> Response:
    return Response(problem_body(status_code, code, detail, **extra), status=status_code, content_type=CONTENT_TYPE)


def from_domain(exc: EscrowError) -> Problem:
    if isinstance(exc, EscrowNotFound):
        return Problem(404, exc.code, exc.detail)
    if isinstance(exc, InvalidTransition):
        return Problem(409, exc.code, exc.detail, state=exc.state)
    if isinstance(exc, NotAllowed):
        return Problem(403, exc.code, exc.detail, state=exc.state)
    if isinstance(exc, InvalidCommand):
        return Problem(400, "validation_error", exc.detail, errors=[{"field": exc.field, "detail": exc.detail}])
    return Problem(400, exc.code, exc.detail)


def _drf(exc: exceptions.APIException) -> Problem:
    if isinstance(exc, exceptions.ParseError):
        return Problem(400, "malformed_json", "the request body is not valid JSON")
    if isinstance(exc, exceptions.NotAuthenticated):
        return Problem(401, "not_authenticated", "a Bearer token is required")
    if isinstance(exc, exceptions.AuthenticationFailed):
        return Problem(401, "invalid_token", "the token is invalid, expired or revoked")
    if isinstance(exc, exceptions.PermissionDenied):
        return Problem(403, "forbidden", str(exc.detail))
    if isinstance(exc, exceptions.NotFound):
        return Problem(404, "not_found", "not found")
    if isinstance(exc, exceptions.MethodNotAllowed):
        return Problem(405, "method_not_allowed", str(exc.detail))
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Problem(415, "unsupported_media_type", "send the body as application/json")
    if isinstance(exc, exceptions.NotAcceptable):
        return Problem(406, "not_acceptable", str(exc.detail))
    if isinstance(exc, exceptions.Throttled):
        return Problem(429, "rate_limited", str(exc.detail), retry_after=getattr(exc, "wait", None))
    if isinstance(exc, exceptions.ValidationError):
        return Problem(400, "validation_error", "the request is invalid", errors=flatten_errors(exc.detail))
    return Problem(exc.status_code, exc.default_code, str(exc.detail))


def flatten_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(flatten_errors(value, name))
        return out
    if isinstance(detail, list):
        out = []
        for item in detail:
            out.extend(flatten_errors(item, prefix))
        return out
    return [{"field": prefix or "body", "detail": str(detail)}]


def database_unavailable(exc: BaseException | None) -> bool:
    """The database cannot be reached, refused the connection (too many clients), dropped it, or this
    process's pool had no free connection in time: the request did nothing durable and may be retried."""
    return isinstance(exc, (OperationalError, InterfaceError))


def unavailable_problem() -> Problem:
    return Problem(503, "database_unavailable", "the database is unavailable; retry after the delay given")


def to_problem(exc: Exception) -> Problem | None:
    if isinstance(exc, Problem):
        return exc
    if database_unavailable(exc):
        return unavailable_problem()
    if isinstance(exc, EscrowError):
        return from_domain(exc)
    if isinstance(exc, Http404):
        return Problem(404, "not_found", "not found")
    if isinstance(exc, RequestDataTooBig):
        return Problem(413, "body_too_large", "the request body is too large")
    if isinstance(exc, exceptions.APIException):
        return _drf(exc)
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    found = to_problem(exc)
    if found is None:
        return None
    response = problem_response(found.status_code, found.code, found.detail, **found.extra)
    if found.status_code == status.HTTP_401_UNAUTHORIZED:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    wait = getattr(exc, "wait", None) if isinstance(exc, exceptions.Throttled) else None
    if wait:
        response["Retry-After"] = str(int(wait) + 1)
    if found.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        response["Retry-After"] = str(settings.DATABASE_RETRY_AFTER_SECONDS)
    return response
