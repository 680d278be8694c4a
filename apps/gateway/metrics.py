"""Prometheus metrics at /api/v1/metrics: HTTP latency per route, bus lag and progress per subscriber,
command-to-event and webhook-to-event latency, outbox lag, dead letters (see docs/performance.md)."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from apps.gateway.observability import MULTIPROCESS, BusCollector, DomainCollector, database_reachable
from apps.gateway.problems import CONTENT_TYPE, problem_body


def _from_loopback(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def scrape_refusal(request: HttpRequest) -> HttpResponse | None:
    """Who may scrape: with METRICS_TOKEN set, whoever sends it as a bearer token (from anywhere);
    without it, only clients on this host (loopback). The figures name routes, subscribers and money
    held, which is nobody else's business."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode()):
            return None
        response = JsonResponse(
            problem_body(401, "not_authenticated", "the metrics token is missing or wrong"),
            status=401,
            content_type=CONTENT_TYPE,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if _from_loopback(request):
        return None
    return JsonResponse(
        problem_body(403, "metrics_forbidden", "metrics are served to this host only unless METRICS_TOKEN is set"),
        status=403,
        content_type=CONTENT_TYPE,
    )


@csrf_exempt  # a read: an unknown method gets 405, not the CSRF middleware's 403
def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(
            problem_body(405, "method_not_allowed", f'Method "{request.method}" not allowed.'),
            status=405,
            content_type=CONTENT_TYPE,
        )
        response["Allow"] = "GET, HEAD"
        return response
    refused = scrape_refusal(request)
    if refused is not None:
        return refused
    if MULTIPROCESS:
        # Every gunicorn worker writes its own files; merge them so one scrape sees the whole server.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if database_reachable():
        tables = CollectorRegistry()
        tables.register(BusCollector())
        tables.register(DomainCollector())
        body += generate_latest(tables)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
