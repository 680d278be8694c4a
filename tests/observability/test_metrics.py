"""The metrics endpoint after a real lifecycle: every family is there, and the figures moved."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from apps.outbox.models import DeadLetter, OutboxMessage
from apps.outbox.reader import unpublished_rows
from tests.helpers import act, create_escrow, pay, state_of

DETAIL_ROUTE = "api/v1/escrows/<uuid:escrow_id>"


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/api/v1/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def lifecycle(api_client, buyer, seller) -> str:
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert act(as_buyer, escrow_id, "release").status_code == 202
    assert state_of(as_buyer, escrow_id) == "RELEASED"
    return escrow_id


def test_metrics_move_after_a_lifecycle(api_client, buyer, seller):
    anonymous = api_client()
    before = scrape(anonymous)
    escrow_id = lifecycle(api_client, buyer, seller)
    after = scrape(anonymous)

    # HTTP latency is labelled by the route pattern, never by the escrow's id.
    detail = dict(method="GET", route=DETAIL_ROUTE, status="200")
    assert (
        value(after, "escrow_http_request_duration_seconds_count", **detail)
        >= value(before, "escrow_http_request_duration_seconds_count", **detail) + 1
    )
    assert value(after, "escrow_http_requests_total", method="POST", route="api/v1/escrows", status="202") >= 1
    assert not [key for key in after if escrow_id in str(key)]

    # Every subscriber applied the lifecycle's messages and caught up.
    for subscriber in ("escrow", "payments", "projections", "notifications"):
        assert value(after, "escrow_bus_applied_messages_total", subscriber=subscriber) > value(
            before, "escrow_bus_applied_messages_total", subscriber=subscriber
        )
        assert value(after, "escrow_bus_lag_messages", subscriber=subscriber) == 0
        assert value(after, "escrow_bus_lag_seconds", subscriber=subscriber) == 0
        p95 = value(after, "escrow_command_to_event_seconds", subscriber=subscriber, quantile="0.95")
        assert not math.isnan(p95) and p95 >= 0

    # The payment arrived by (sandbox) webhook, and the escrow applied the event it produced.
    assert not math.isnan(value(after, "escrow_webhook_to_event_seconds", quantile="0.5"))
    written = value(after, "escrow_outbox_written_messages_total")
    assert written >= value(before, "escrow_outbox_written_messages_total") + 5
    assert written == OutboxMessage.objects.order_by("-id").first().id
    # Without a relay nothing is published, so the outbox lag counts every row.
    assert (
        value(after, "escrow_outbox_unpublished_messages")
        == unpublished_rows().count()
        == OutboxMessage.objects.count()
    )
    assert value(after, "escrow_dead_letters_open") == 0 == DeadLetter.objects.count()


def test_before_any_message_the_latency_figures_are_nan_not_zero(api_client, transactional_db):
    samples = scrape(api_client())
    assert math.isnan(value(samples, "escrow_command_to_event_seconds", subscriber="projections", quantile="0.99"))
    assert value(samples, "escrow_bus_lag_messages", subscriber="projections") == 0


def test_unknown_paths_and_verbs_share_one_series(api_client, transactional_db):
    client = api_client()
    unmatched = dict(method="GET", route="unmatched", status="404")
    # The registry is per process: other tests' requests are in it too, so compare before and after.
    before = value(scrape(client), "escrow_http_requests_total", **unmatched)
    for n in range(3):
        assert client.get(f"/api/v1/no-such-thing-{n}").status_code == 404
    assert client.generic("BREW", "/api/v1/health").status_code in (400, 405)
    body = client.get("/api/v1/metrics").content.decode()
    assert "no-such-thing" not in body
    assert "BREW" not in body
    assert value(scrape(client), "escrow_http_requests_total", **unmatched) == before + 3


def test_access_log_carries_route_and_escrow_id(api_client, buyer, seller, caplog):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    caplog.clear()
    with caplog.at_level("INFO", logger="apps.gateway.access"):
        assert as_buyer.get(f"/api/v1/escrows/{escrow_id}", HTTP_X_CORRELATION_ID="corr-42").status_code == 200
    [record] = [r for r in caplog.records if r.name == "apps.gateway.access"]
    assert record.escrow_id == escrow_id
    assert record.route == DETAIL_ROUTE
    assert record.correlation_id == "corr-42"


def test_metrics_answer_this_host_only_without_a_token(client, db):
    from_here = client.get("/api/v1/metrics", REMOTE_ADDR="127.0.0.1")
    from_v6_here = client.get("/api/v1/metrics", REMOTE_ADDR="::1")
    from_elsewhere = client.get("/api/v1/metrics", REMOTE_ADDR="203.0.113.7")

    assert from_here.status_code == 200 and from_v6_here.status_code == 200
    assert from_elsewhere.status_code == 403
    assert from_elsewhere["Content-Type"].startswith("application/problem+json")
    assert from_elsewhere.json()["code"] == "metrics_forbidden"
    assert b"escrow_" not in from_elsewhere.content


def test_metrics_with_a_token_need_it_from_everyone(client, db, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    for headers in (
        {},
        {"HTTP_AUTHORIZATION": "Bearer wrong"},
        {"HTTP_AUTHORIZATION": "Basic s3cret-scrape-token"},
        {"HTTP_AUTHORIZATION": "Bearer s3cret-scrape-token-and-more"},
    ):
        refused = client.get("/api/v1/metrics", REMOTE_ADDR="127.0.0.1", **headers)
        assert refused.status_code == 401, headers
        assert refused["WWW-Authenticate"].startswith("Bearer")
        assert refused.json()["code"] == "not_authenticated"
        assert b"escrow_" not in refused.content

    allowed = client.get("/api/v1/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert allowed.status_code == 200
    assert b"escrow_http_requests_total" in allowed.content
