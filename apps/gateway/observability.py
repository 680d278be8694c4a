"""Process-wide Prometheus instruments and the collector that reads the bus's progress from the database.

Two kinds of figures, on purpose:
- HTTP latency is observed in the process that served the request (a histogram per resolved route).
  Under gunicorn each worker is its own process, so when PROMETHEUS_MULTIPROC_DIR is set the
  instruments write to files there and the metrics view merges every process's files.
- Bus figures (lag, command-to-event, webhook-to-event, dead letters) are read from the outbox tables
  at scrape time. The bus worker usually runs in another process than the one answering the scrape,
  and the tables are the one place where every process's progress is recorded; reading them also
  means the figures survive restarts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from django.db import connection
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from apps.outbox.public import Subscriber

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Buckets from 2 ms to 10 s: the read path targets tens of milliseconds, commands hundreds.
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

HTTP_LATENCY = Histogram(
    "escrow_http_request_duration_seconds",
    "Time to answer an HTTP request, by resolved route pattern (never the raw path: ids would explode the label set)",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "escrow_http_requests", "HTTP requests answered, by resolved route pattern", ["method", "route", "status"]
)

# How many of the most recently applied messages the latency quantiles look at. Reading by primary key
# from the newest row keeps a scrape cheap however large the tables grow.
RECENT_WINDOW = 1000
QUANTILES = (0.5, 0.95, 0.99)

# Event types written while a provider webhook is processed: their occurred_at is (within the
# webhook's own transaction) the moment the webhook was accepted.
WEBHOOK_EVENT_TYPES = (
    "payments.v1.PaymentSucceeded",
    "payments.v1.PaymentFailed",
    "payments.v1.ChargebackOpened",
)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(*, method: str, route: str, status: int, seconds: float) -> None:
    # Any verb a client invents would otherwise become a new series.
    labels = (method if method in _METHODS else "OTHER", route, str(status))
    HTTP_LATENCY.labels(*labels).observe(seconds)
    HTTP_REQUESTS.labels(*labels).inc()


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted list (NaN when empty, as Prometheus expects)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class BusCollector(Collector):
    """Bus progress read from the outbox tables at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from apps.outbox import public as outbox

        subscribers = outbox.outbox_subscribers()
        lag = GaugeMetricFamily(
            "escrow_bus_lag_messages", "Outbox messages a subscriber has not processed yet", labels=["subscriber"]
        )
        lag_age = GaugeMetricFamily(
            "escrow_bus_lag_seconds",
            "Age of the oldest message a subscriber has not processed (0 if none)",
            labels=["subscriber"],
        )
        applied = CounterMetricFamily(
            "escrow_bus_applied_messages",
            "Messages a subscriber has applied (its dedupe records)",
            labels=["subscriber"],
        )
        c2e = GaugeMetricFamily(
            "escrow_command_to_event_seconds",
            f"Outbox occurred_at to subscriber applied, over its last {RECENT_WINDOW} applied messages",
            labels=["subscriber", "quantile"],
        )
        for sub in subscribers:
            pending, oldest = _pending(sub)
            lag.add_metric([sub.name], pending)
            lag_age.add_metric([sub.name], oldest)
            applied.add_metric([sub.name], _applied_count(sub.name))
            delays = _recent_delays(subscriber=sub.name)
            for q in QUANTILES:
                c2e.add_metric([sub.name, str(q)], quantile(delays, q))
        yield from (lag, lag_age, applied, c2e)

        w2e = GaugeMetricFamily(
            "escrow_webhook_to_event_seconds",
            "Webhook accepted (its payment event written) to the escrow applying it, over the webhook "
            f"events among the escrow's last {RECENT_WINDOW} applied messages",
            labels=["quantile"],
        )
        delays = _recent_delays(subscriber="escrow", types=WEBHOOK_EVENT_TYPES)
        for q in QUANTILES:
            w2e.add_metric([str(q)], quantile(delays, q))
        yield w2e

        yield from _outbox_metrics()
        yield from _dead_letter_metrics(sub.name for sub in subscribers)


class DomainCollector(Collector):
    """Money held by state and the escrows waiting for a human, read at scrape time through the escrow
    and projections public modules (for the dashboard and the alerts in deploy/)."""

    def collect(self) -> Iterator[Metric]:
        from apps.escrow.public import money_held_by_state
        from apps.projections.public import ops_attention_waiting

        held = GaugeMetricFamily(
            "escrow_money_held_minor",
            "Money held now (minor units), by escrow state and currency",
            labels=["state", "currency"],
        )
        holding = GaugeMetricFamily(
            "escrow_money_held_escrows",
            "Escrows holding money now, by state and currency",
            labels=["state", "currency"],
        )
        for state, currency, amount, escrows in money_held_by_state():
            held.add_metric([state, currency], amount)
            holding.add_metric([state, currency], escrows)
        yield from (held, holding)

        waiting = GaugeMetricFamily(
            "escrow_attention_escrows",
            "Escrows waiting for a human, by kind (compliance_hold, transfer_failed, ...)",
            labels=["attention"],
        )
        oldest = GaugeMetricFamily(
            "escrow_attention_oldest_seconds",
            "How long the longest-waiting escrow of each kind of attention has waited",
            labels=["attention"],
        )
        for attention, escrows, seconds in ops_attention_waiting():
            waiting.add_metric([attention], escrows)
            oldest.add_metric([attention], seconds)
        yield from (waiting, oldest)


def _pending(subscriber: Subscriber) -> tuple[int, float]:
    from django.db.models import Count, Min

    from apps.outbox.public import OutboxMessage, rows_after, subscriber_checkpoint

    checkpoint = subscriber_checkpoint(subscriber.name)
    row = OutboxMessage.objects.filter(
        rows_after(checkpoint.last_txid, checkpoint.last_id),
        topic__in=subscriber.topics,
    ).aggregate(n=Count("id"), oldest=Min("occurred_at"))
    oldest = row["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else 0.0
    return row["n"], max(age, 0.0)


def _applied_count(name: str) -> int:
    from apps.outbox.public import ProcessedMessage

    return ProcessedMessage.objects.filter(subscriber=name).count()


def _recent_delays(*, subscriber: str, types: Iterable[str] | None = None) -> list[float]:
    """Seconds from occurred_at to applied for the subscriber's last RECENT_WINDOW applied messages
    (only those of `types`, if given), sorted. Both reads use unique indexes: the newest dedupe
    records by primary key, then their outbox rows by event id; no scan grows with the tables."""
    from apps.outbox.public import OutboxMessage, ProcessedMessage

    rows = list(
        ProcessedMessage.objects.filter(subscriber=subscriber)
        .order_by("-id")
        .values_list("event_id", "processed_at")[:RECENT_WINDOW]
    )
    if not rows:
        return []
    outbox = OutboxMessage.objects.filter(event_id__in=[r[0] for r in rows])
    wanted = set(types) if types is not None else None
    occurred = {
        eid: at
        for eid, at, type_name in outbox.values_list("event_id", "occurred_at", "type")
        if wanted is None or type_name in wanted
    }
    delays = [max((done - occurred[eid]).total_seconds(), 0.0) for eid, done in rows if eid in occurred]
    return sorted(delays)


def _outbox_metrics() -> Iterator[Metric]:
    from apps.outbox.public import OutboxMessage, backlog, published_rows

    waiting = backlog()
    unpublished = GaugeMetricFamily("escrow_outbox_unpublished_messages", "Outbox rows not yet relayed to Kafka")
    unpublished.add_metric([], waiting.pending)
    yield unpublished
    age = GaugeMetricFamily(
        "escrow_outbox_lag_seconds", "Age of the oldest outbox row not yet relayed to Kafka (0 if none)"
    )
    age.add_metric([], waiting.oldest_age_seconds)
    yield age
    last = OutboxMessage.objects.order_by("-id").values_list("id", flat=True).first() or 0
    written = CounterMetricFamily("escrow_outbox_written_messages", "Outbox rows written (highest row id)")
    written.add_metric([], last)
    yield written
    # The relay publishes in delivery order, so the highest published id counts what it relayed; read from
    # the newest rows down, it stops at the first published one (the backlog, when the relay keeps up: none).
    relayed_id = published_rows().order_by("-id").values_list("id", flat=True).first() or 0
    relayed = CounterMetricFamily(
        "escrow_outbox_relayed_messages",
        "Outbox rows relayed to Kafka (highest published row id); its rate is the relay rate",
    )
    relayed.add_metric([], relayed_id)
    yield relayed


def _dead_letter_metrics(names: Iterable[str]) -> Iterator[Metric]:
    from django.db.models import Count

    from apps.outbox.public import DeadLetter

    counts = dict(
        DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
        .values_list("subscriber")
        .annotate(n=Count("id"))
        .values_list("subscriber", "n")
    )
    per_subscriber = GaugeMetricFamily(
        "escrow_dead_letters_open_by_subscriber", "Dead letters waiting for ops, per subscriber", labels=["subscriber"]
    )
    for name in sorted(set(names) | set(counts)):
        per_subscriber.add_metric([name], counts.get(name, 0))
    yield per_subscriber
    total = GaugeMetricFamily("escrow_dead_letters_open", "Dead letters waiting for ops")
    total.add_metric([], sum(counts.values()))
    yield total


def database_reachable() -> bool:
    try:
        connection.ensure_connection()
    except Exception:  # noqa: BLE001 - a scrape must still answer the HTTP figures when the DB is down
        return False
    return True
