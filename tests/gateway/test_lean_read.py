"""GET /escrows/{id} is served outside DRF's per-request machinery (apps/gateway/views.py, EscrowDetail):
every answer must be the one DRF's path gives, byte for byte and header for header, for every caller and
every refusal. Each request below is sent twice, once on each path, and the two answers compared."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.views import APIView

from apps.gateway.tokens import mint_access_token
from apps.gateway.views import EscrowDetail
from tests.gateway.support import settle
from tests.helpers import create_escrow, pay

# Differ by request whatever the path: the request's own ids.
_PER_REQUEST = {"X-Correlation-ID", "traceparent"}


def _answer(monkeypatch: Any, *, lean: bool, path: str, **headers: Any) -> tuple[int, dict[str, str], bytes, int]:
    """(status, headers, body, how many times DRF's initial() ran) for one request on one path."""
    monkeypatch.setattr(EscrowDetail, "lean", lean)
    calls = []
    original = APIView.initial

    def counting(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "initial", counting)
    response = Client().get(path, **headers)
    monkeypatch.setattr(APIView, "initial", original)
    kept = {name: value for name, value in response.headers.items() if name not in _PER_REQUEST}
    return response.status_code, kept, response.content, len(calls)


def _same_on_both_paths(monkeypatch: Any, path: str, *, lean_expected: bool = True, **headers: Any) -> int:
    lean = _answer(monkeypatch, lean=True, path=path, **headers)
    drf = _answer(monkeypatch, lean=False, path=path, **headers)
    assert lean[:3] == drf[:3], (path, headers)
    assert drf[3] == 1
    assert lean[3] == (0 if lean_expected else 1), "the lean path was not the one taken"
    return lean[0]


def _bearer(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {mint_access_token(user)}"}


@pytest.fixture
def awaiting_funds(api_client, buyer, seller) -> str:
    escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]
    settle()
    return str(escrow_id)


def test_every_caller_gets_the_same_answer_on_both_paths(monkeypatch, awaiting_funds, buyer, seller, stranger, staff):
    path = f"/api/v1/escrows/{awaiting_funds}"
    # The buyer's answer carries the payment instructions (a second read) while the escrow awaits funds.
    assert _same_on_both_paths(monkeypatch, path, **_bearer(buyer)) == 200
    assert b'"payment"' in Client().get(path, **_bearer(buyer)).content
    assert _same_on_both_paths(monkeypatch, path, **_bearer(seller)) == 200
    assert _same_on_both_paths(monkeypatch, path, **_bearer(staff)) == 200
    assert _same_on_both_paths(monkeypatch, path, **_bearer(stranger)) == 404
    assert (
        _same_on_both_paths(monkeypatch, "/api/v1/escrows/00000000-0000-0000-0000-000000000000", **_bearer(buyer))
        == 404
    )


def test_every_refusal_is_the_same_on_both_paths(monkeypatch, awaiting_funds, buyer):
    path = f"/api/v1/escrows/{awaiting_funds}"
    token = _bearer(buyer)
    cases: list[tuple[str, dict[str, str], int]] = [
        (path, {}, 401),  # no token
        (path, {"HTTP_AUTHORIZATION": "Bearer not-a-jwt"}, 401),
        (path, {"HTTP_AUTHORIZATION": "Bearer"}, 401),
        (path, {"HTTP_AUTHORIZATION": "Bearer a b"}, 401),
        (path, {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}, 401),
        (path + "?colour=blue", token, 400),
        (path + "?min_version=1&min_version=2", token, 400),
        (path + "?min_version=x", token, 400),
        (path + "?min_version=0", token, 400),
        (path + "?min_version=999", token, 412),
        (path + "?min_version=1", token, 200),
    ]
    for url, headers, status in cases:
        assert _same_on_both_paths(monkeypatch, url, **headers) == status, (url, headers)


def test_conditional_reads_and_the_accept_header(monkeypatch, awaiting_funds, buyer):
    path = f"/api/v1/escrows/{awaiting_funds}"
    token = _bearer(buyer)
    etag = Client().get(path, **token)["ETag"]
    assert _same_on_both_paths(monkeypatch, path, HTTP_IF_NONE_MATCH=etag, **token) == 304
    assert _same_on_both_paths(monkeypatch, path, HTTP_IF_NONE_MATCH=f"W/{etag}", **token) == 304
    assert _same_on_both_paths(monkeypatch, path, HTTP_IF_NONE_MATCH='"0-other"', **token) == 200
    assert _same_on_both_paths(monkeypatch, path, HTTP_PREFER="wait=0", **token) == 200
    assert _same_on_both_paths(monkeypatch, path, HTTP_ACCEPT="application/json", **token) == 200
    assert _same_on_both_paths(monkeypatch, path, HTTP_ACCEPT="*/*", **token) == 200
    # Anything DRF's negotiation would treat otherwise goes through DRF.
    for accept in ("text/html", "application/json; indent=4", "text/html, */*;q=0.8"):
        _same_on_both_paths(monkeypatch, path, lean_expected=False, HTTP_ACCEPT=accept, **token)
    _same_on_both_paths(monkeypatch, path + "?format=json", lean_expected=False, **token)


def test_a_funded_escrow_reads_the_same_and_in_one_statement(monkeypatch, api_client, awaiting_funds, buyer):
    assert pay(api_client(buyer), awaiting_funds).status_code == 202
    settle()
    path = f"/api/v1/escrows/{awaiting_funds}"
    assert _same_on_both_paths(monkeypatch, path, **_bearer(buyer)) == 200
    token = _bearer(buyer)
    with CaptureQueriesContext(connection) as captured:
        response = Client().get(path, **token)
    assert response.json()["state"] == "FUNDS_HELD"
    # The embedded default keeps revocations in the database's cache table: that read, then the escrow's.
    assert len([q for q in captured.captured_queries if "escrow_cache" not in q["sql"]]) == 1


def test_an_unreadable_revocation_cache_is_the_same_503_on_both_paths(monkeypatch, settings, awaiting_funds, buyer):
    token = _bearer(buyer)
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    assert _same_on_both_paths(monkeypatch, f"/api/v1/escrows/{awaiting_funds}", **token) == 503
    response = Client().get(f"/api/v1/escrows/{awaiting_funds}", **token)
    assert response.json()["code"] == "auth_unavailable"
    assert response["Retry-After"]


def test_head_and_options_still_go_through_drf(awaiting_funds, buyer):
    path = f"/api/v1/escrows/{awaiting_funds}"
    head = Client().head(path, **_bearer(buyer))
    assert head.status_code == 200
    assert head["ETag"]
    assert Client().post(path, **_bearer(buyer)).status_code == 405
