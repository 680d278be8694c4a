"""Prometheus metrics at /api/v1/metrics: outbox size and per-subscriber lag, dead letters."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from apps.outbox import bus
from apps.outbox.models import DeadLetter, OutboxMessage


def metrics_view(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry()
    lag = Gauge("escrow_bus_lag_messages", "Outbox messages a subscriber has not processed yet",
                ["subscriber"], registry=registry)
    for sub in bus.outbox_subscribers():
        lag.labels(sub.name).set(bus.lag(sub))
    Gauge("escrow_outbox_unpublished_messages", "Outbox rows not yet relayed to Kafka",
          registry=registry).set(OutboxMessage.objects.filter(published_at__isnull=True).count())
    Gauge("escrow_dead_letters_open", "Dead letters waiting for ops", registry=registry).set(
        DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).count())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
