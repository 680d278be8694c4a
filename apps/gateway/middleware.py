"""Binds a correlation id and a W3C traceparent to each request, echoes them, and logs one structured
line per request. With tracing on (apps/outbox/tracing.py), each request is a server span and the
traceparent is that span's."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from apps.gateway import observability
from apps.outbox.public import context, tracing

log = logging.getLogger("apps.gateway.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Correlation-ID") or request.headers.get("X-Request-ID") or ""
        correlation_id = incoming if _SAFE_ID.match(incoming) else context.new_correlation_id()
        parent = request.headers.get("traceparent", "")
        active = tracing.tracer()
        if active is None:
            traceparent = (
                context.child_traceparent(parent) if context.valid_traceparent(parent) else context.new_traceparent()
            )
            return self._handle(request, correlation_id, traceparent, None)
        # The server span: the outbox rows written by this request name it as their parent.
        from opentelemetry.trace import SpanKind

        with tracing.span(
            active,
            request.method or "HTTP",
            parent=parent,
            kind=SpanKind.SERVER,
            tracestate=request.headers.get("tracestate", ""),
            attributes={"http.request.method": request.method or "", "correlation_id": correlation_id},
        ) as span:
            return self._handle(request, correlation_id, tracing.traceparent_of(span), span)

    def _handle(self, request: HttpRequest, correlation_id: str, traceparent: str, span: Any) -> HttpResponse:
        started = time.perf_counter()
        with context.bound(context.TraceContext(correlation_id=correlation_id, traceparent=traceparent)):
            response = self.get_response(request)
            duration = time.perf_counter() - started
            duration_ms = duration * 1000
            match = getattr(request, "resolver_match", None)
            # The route pattern, not the path: one series per endpoint however many escrows exist.
            route = match.route if match is not None else "unmatched"
            escrow_id = match.kwargs.get("escrow_id") if match is not None else None
            observability.observe_request(
                method=request.method or "", route=route, status=response.status_code, seconds=duration
            )
            if span is not None:
                _describe(span, request, route, response.status_code, escrow_id)
            response["X-Correlation-ID"] = correlation_id
            response["traceparent"] = traceparent
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(duration_ms, 2),
                    "user_id": getattr(getattr(request, "user", None), "pk", None),
                    "route": route,
                    "escrow_id": str(escrow_id) if escrow_id is not None else None,
                },
            )
        return response


def _describe(span: Any, request: HttpRequest, route: str, status: int, escrow_id: object) -> None:
    """The server span's name and attributes, known once the URL has been resolved and answered."""
    from opentelemetry.trace import Status, StatusCode

    span.update_name(f"{request.method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if escrow_id is not None:
        span.set_attribute("escrow_id", str(escrow_id))
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
