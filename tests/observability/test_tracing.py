"""OpenTelemetry tracing: one trace from the HTTP request through every subscriber, and the traceparent
in the outbox rows (and so in Kafka headers) is the span that wrote them. Spans are read from the SDK's
in-memory exporter, installed through `tracing.setup` like any other exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from apps.outbox import context, tracing
from apps.outbox.kafka.consumer import AppConsumer
from apps.outbox.kafka.relay import OutboxRelay
from apps.outbox.models import OutboxMessage
from tests.helpers import act, create_escrow, pay, state_of

SUBSCRIBERS = {"escrow", "payments", "projections", "notifications"}
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.setup(enabled=True, exporter=exporter, service_name="escrow-test")
    try:
        yield exporter
    finally:
        tracing.shutdown()  # the next use reads the settings again: off


def ids(traceparent: str) -> tuple[int, int]:
    assert context.valid_traceparent(traceparent), traceparent
    _, trace_id, span_id, _ = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def ids_of(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def parent_ids(span: ReadableSpan) -> tuple[int, int] | None:
    return (span.parent.trace_id, span.parent.span_id) if span.parent is not None else None


def handling_spans(finished: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in finished if s.kind is SpanKind.CONSUMER]


def subscriber_of(span: ReadableSpan) -> str:
    return str(span.attributes["subscriber"])


def drive_trade(as_buyer: Any, as_seller: Any, seller: Any) -> tuple[str, dict[str, Any]]:
    """create -> sandbox pay -> deliver -> release; the responses by step."""
    created = create_escrow(as_buyer, seller=seller, amount="149.99")
    escrow_id = created["escrow_id"]
    responses = {
        "pay": pay(as_buyer, escrow_id),
        "deliver": act(as_seller, escrow_id, "deliver"),
        "release": act(as_buyer, escrow_id, "release"),
    }
    assert all(r.status_code == 202 for r in responses.values()), {k: r.content for k, r in responses.items()}
    assert state_of(as_buyer, escrow_id) == "RELEASED"
    return escrow_id, responses


def test_a_trade_is_one_trace_per_request_from_the_http_span_through_every_subscriber(spans, api_client, buyer, seller):
    escrow_id, responses = drive_trade(api_client(buyer), api_client(seller), seller)
    finished = list(spans.get_finished_spans())
    by_ids = {ids_of(s): s for s in finished}
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    handled = handling_spans(finished)
    assert {subscriber_of(s) for s in handled} == SUBSCRIBERS

    # Every outbox row carries the traceparent of the span that wrote it: a request or a handler.
    rows = list(OutboxMessage.objects.filter(aggregate_id=escrow_id))
    assert rows
    writers = {row.event_id: by_ids[ids(row.traceparent)] for row in rows}
    assert {w.kind for w in writers.values()} == {SpanKind.SERVER, SpanKind.CONSUMER}

    # Each handling span is the child of the span that wrote its message, in that span's trace...
    by_event = {str(row.event_id): row for row in rows}
    for span in handled:
        row = by_event[span.attributes["messaging.message.id"]]
        assert parent_ids(span) == ids(row.traceparent) == ids_of(writers[row.event_id])
        assert span.attributes["escrow_id"] == escrow_id
        assert span.attributes["correlation_id"] == row.correlation_id
        # ...and following the parents leads back to an HTTP request span: one trace per request.
        root = span
        while root.parent is not None:
            root = by_ids[parent_ids(root)]
            assert root.context.trace_id == span.context.trace_id
        assert root.kind is SpanKind.SERVER

    # The release request's trace reaches all four subscribers (payout, then the escrow's reaction to it,
    # then the read models and notifications of EscrowReleased).
    release = responses["release"]
    (release_span,) = [s for s in servers if s.attributes["http.route"].endswith("/release")]
    assert release["traceparent"] == tracing.traceparent_of(release_span)
    in_release_trace = [s for s in handled if s.context.trace_id == release_span.context.trace_id]
    assert {subscriber_of(s) for s in in_release_trace} == SUBSCRIBERS
    assert release_span.parent is None  # no incoming traceparent: a new trace
    assert release_span.name == "POST " + release_span.attributes["http.route"]
    assert release_span.attributes["http.request.method"] == "POST"
    assert release_span.attributes["http.route"] == "api/v1/escrows/<uuid:escrow_id>/release"
    assert release_span.attributes["http.response.status_code"] == 202
    assert release_span.attributes["escrow_id"] == escrow_id
    assert release_span.attributes["correlation_id"] == release["X-Correlation-ID"]
    assert release_span.resource.attributes["service.name"] == "escrow-test"


def test_an_incoming_traceparent_is_continued(spans, api_client, buyer, seller):
    client = api_client(buyer)
    response = client.post(
        "/api/v1/escrows",
        {"seller": seller.username, "amount": "20.00", "currency": "USD", "description": "traced"},
        format="json",
        HTTP_TRACEPARENT=INCOMING,
        HTTP_X_CORRELATION_ID="trace-test-1",
    )
    assert response.status_code == 202, response.content
    escrow_id = response.json()["escrow_id"]
    incoming_trace, incoming_span = ids(INCOMING)

    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.context.trace_id == incoming_trace
    assert parent_ids(server) == (incoming_trace, incoming_span)
    assert server.attributes["correlation_id"] == "trace-test-1"
    assert server.attributes["http.route"] == "api/v1/escrows"
    assert "escrow_id" not in server.attributes  # the URL names none
    assert response["traceparent"] == tracing.traceparent_of(server)

    (created,) = OutboxMessage.objects.filter(aggregate_id=escrow_id, type="escrow.v1.EscrowCreated")
    assert created.traceparent == tracing.traceparent_of(server)
    handled = handling_spans(list(spans.get_finished_spans()))
    assert handled and all(s.context.trace_id == incoming_trace for s in handled)


def test_an_invalid_incoming_traceparent_starts_a_new_trace(spans, api_client, buyer):
    response = api_client(buyer).get("/api/v1/escrows", HTTP_TRACEPARENT="00-" + "0" * 32 + "-00f067aa0ba902b7-01")
    assert response.status_code == 200
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.parent is None and server.context.trace_id != 0
    assert response["traceparent"] == tracing.traceparent_of(server)


def test_with_tracing_off_no_span_is_recorded_and_rows_still_carry_a_traceparent(settings, api_client, buyer, seller):
    exporter = InMemorySpanExporter()
    tracing.setup(enabled=True, exporter=exporter)
    settings.TRACING_ENABLED = False
    tracing.shutdown()  # as at startup: the first use reads the settings
    try:
        response = api_client(buyer).post(
            "/api/v1/escrows",
            {"seller": seller.username, "amount": "20.00", "currency": "USD", "description": "untraced"},
            format="json",
            HTTP_TRACEPARENT=INCOMING,
        )
        assert response.status_code == 202, response.content
        escrow_id = response.json()["escrow_id"]
        assert act(api_client(buyer), escrow_id, "cancel").status_code == 202
        assert tracing.tracer() is None
    finally:
        tracing.shutdown()
    assert exporter.get_finished_spans() == ()

    # The hand-made propagation as before: the request continues the incoming trace with a span id of
    # its own, every row carries a valid traceparent, and the handlers' rows stay in their message's trace.
    incoming_trace, incoming_span = ids(INCOMING)
    answered_trace, answered_span = ids(response["traceparent"])
    assert answered_trace == incoming_trace and answered_span != incoming_span
    rows = list(OutboxMessage.objects.filter(aggregate_id=escrow_id))
    assert len(rows) >= 2
    for row in rows:
        trace_id, _ = ids(row.traceparent)
        if row.correlation_id == response["X-Correlation-ID"]:
            assert trace_id == incoming_trace
    created = next(r for r in rows if r.type == "escrow.v1.EscrowCreated")
    assert created.traceparent == response["traceparent"]


def test_the_settings_turn_tracing_on_with_the_configured_exporter(settings, api_client, buyer):
    settings.TRACING_ENABLED = True
    settings.TRACING_EXPORTER = "none"  # real spans and ids, exported nowhere
    tracing.shutdown()
    try:
        response = api_client(buyer).get("/api/v1/escrows", HTTP_TRACEPARENT=INCOMING)
        assert tracing.tracer() is not None
    finally:
        tracing.shutdown()
    trace_id, span_id = ids(response["traceparent"])
    assert trace_id == ids(INCOMING)[0] and span_id != ids(INCOMING)[1]
    settings.TRACING_EXPORTER = "carrier-pigeon"
    with pytest.raises(ValueError, match="TRACING_EXPORTER"):
        tracing.setup(enabled=True)
    tracing.shutdown()


def test_each_process_is_its_own_service_by_default():
    assert tracing.default_service_name(["/srv/.venv/bin/gunicorn", "escrow_project.wsgi"]) == "escrow"
    assert tracing.default_service_name(["manage.py", "serve", "127.0.0.1:8000"]) == "escrow"
    assert tracing.default_service_name(["manage.py", "run_bus"]) == "escrow-run_bus"
    assert tracing.default_service_name(["manage.py", "relay_outbox"]) == "escrow-relay_outbox"
    assert (
        tracing.default_service_name(["manage.py", "consume", "--group", "g1", "payments"]) == "escrow-consume-payments"
    )
    assert (
        tracing.default_service_name(["manage.py", "consume", "notifications", "--until-caught-up"])
        == "escrow-consume-notifications"
    )


@pytest.mark.kafka
def test_a_kafka_consumer_continues_the_trace_from_the_record_headers(
    spans, kafka, fresh_group, settings, api_client, buyer, seller
):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["escrow", "payments"]  # projections is fed from Kafka only
    group = fresh_group("projections")
    # One request (the create, left awaiting acceptance), so one server span to follow.
    escrow_id = create_escrow(api_client(buyer), seller=seller, accept=False)["escrow_id"]
    OutboxRelay(servers=kafka).run(once=True)
    stats = AppConsumer(app="projections", group_id=group).run(until_caught_up=True)
    assert stats.applied >= 1 and stats.dead_lettered == 0

    finished = list(spans.get_finished_spans())
    (created,) = OutboxMessage.objects.filter(aggregate_id=escrow_id, type="escrow.v1.EscrowCreated")
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    (projected,) = [
        s
        for s in handling_spans(finished)
        if subscriber_of(s) == "projections" and s.attributes["messaging.message.id"] == str(created.event_id)
    ]
    # The relay copied the row's traceparent into the record's headers; the consumer's span is its child.
    assert parent_ids(projected) == ids(created.traceparent) == ids_of(server)
    assert projected.attributes["messaging.destination.name"] == created.topic
