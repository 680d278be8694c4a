"""Prometheus metrics at /api/v1/metrics: HTTP latency per route, bus lag and progress per subscriber,
command-to-event and webhook-to-event latency, outbox lag, dead letters (see docs/performance.md)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from apps.gateway.observability import MULTIPROCESS, BusCollector, database_reachable


def metrics_view(request: HttpRequest) -> HttpResponse:
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
        body += generate_latest(tables)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
