"""OpenAPI for the routes drf-spectacular cannot see: the provider webhooks and /metrics are plain
Django views (the webhook verifier needs the raw body untouched by DRF), and the schema and docs views
leave themselves out. Clients and gateways still need every route in the one document."""

from __future__ import annotations

from typing import Any

_PROBLEM = {"description": "problem+json", "content": {"application/problem+json": {"schema": {"type": "object"}}}}


def _webhook(provider: str, *signature_headers: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"webhook_{provider}",
            "summary": f"Signature-verified {provider} webhook",
            "description": f"Called by {provider}, not by users. The raw body is verified against the "
                           f"{', '.join(signature_headers)} header(s) before anything is trusted.",
            "tags": ["webhooks"],
            "security": [],
            "parameters": [{"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                           for name in signature_headers],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {"description": "accepted (a duplicate delivery is accepted too, with no second effect)",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": _PROBLEM,
                "404": _PROBLEM,
                "413": _PROBLEM,
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
    paths.setdefault("/api/v1/metrics", _plain_get("metrics", "Prometheus metrics", "text/plain"))
    paths.setdefault("/api/v1/schema", _plain_get("schema", "This OpenAPI 3 document", "application/vnd.oai.openapi+json"))
    paths.setdefault("/api/v1/docs", _plain_get("docs", "Swagger UI", "text/html"))
    paths.setdefault("/api/v1/redoc", _plain_get("redoc", "ReDoc", "text/html"))
    return result
