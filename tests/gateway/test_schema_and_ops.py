"""The API describes itself (OpenAPI 3, Swagger UI) and answers liveness and readiness probes."""

from __future__ import annotations

import re

from django.urls import URLPattern

from apps.gateway import urls as gateway_urls


def _openapi_path(pattern: URLPattern) -> str:
    return "/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))


def test_the_schema_is_openapi_3_and_covers_every_route(client, db):
    response = client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    routes = {_openapi_path(p) for p in gateway_urls.urlpatterns}
    assert routes - set(schema["paths"]) == set()
    create = schema["paths"]["/api/v1/escrows"]["post"]
    assert "202" in create["responses"]
    assert {"seller", "amount", "currency", "description"} <= set(
        schema["components"]["schemas"]["CreateEscrowInputRequest"]["properties"]
    )


def test_the_docs_page_serves(client, db):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_health_and_ready_answer_without_a_token(client, db):
    health = client.get("/api/v1/health")
    ready = client.get("/api/v1/ready")

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["database"] == "ok"
    assert set(body["bus_lag"]) >= {"escrow", "payments", "projections"}


def test_the_schema_generates_without_warnings_and_validates(db, tmp_path):
    from django.core.management import call_command

    # --fail-on-warn turns an undocumented field or view into an error; --validate checks OpenAPI 3.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3.")
