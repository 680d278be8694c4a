"""Bodies built to hurt: too large, too deep, non-standard JSON literals, absurd values, and floods of
mutations. Each gets a precise 4xx problem and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from apps.escrow.models import Escrow
from tests.gateway.support import assert_problem
from tests.helpers import create_escrow
from tests.hostile.test_authorization_matrix import counts

VALID = {"seller": "seller", "amount": "149.99", "currency": "USD", "description": "Dominus"}


def post_raw(client: Any, path: str, body: bytes, content_type: str = "application/json") -> Any:
    return client.generic("POST", path, body, content_type=content_type)


@pytest.mark.parametrize("path", ["/api/v1/escrows", "/api/v1/webhooks/stripe", "/api/v1/webhooks/custodian"])
def test_a_body_over_the_upload_limit_is_413(path: str, api_client: Any, buyer: Any, seller: Any) -> None:
    body = json.dumps({**VALID, "description": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}).encode()
    before = counts()
    assert_problem(post_raw(api_client(buyer), path, body), 413, "body_too_large")
    assert counts() == before


@pytest.mark.parametrize("depth", [33, 1_000, 10_000])
def test_deeply_nested_json_is_400(depth: int, api_client: Any, buyer: Any, seller: Any) -> None:
    before = counts()
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        assert_problem(post_raw(api_client(buyer), "/api/v1/escrows", body), 400, "malformed_json")
    assert counts() == before


def test_nesting_inside_strings_does_not_count(api_client: Any, buyer: Any, seller: Any) -> None:
    response = api_client(buyer).post("/api/v1/escrows", {**VALID, "description": "[[[[{{{{" * 20}, format="json")
    assert response.status_code == 202, response.content


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0"])
@pytest.mark.parametrize("field", ["amount", "seller", "inspection_period_hours"])
def test_non_standard_numbers_are_refused(literal: bytes, field: str, api_client: Any, buyer: Any, seller: Any) -> None:
    body = json.dumps({**VALID, field: "__X__"}).encode().replace(b'"__X__"', literal)
    before = counts()
    response = post_raw(api_client(buyer), "/api/v1/escrows", body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] in {"malformed_json", "validation_error"}
    assert counts() == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": "9" * 19}, "amount"),
        ({"amount": "1" + "0" * 5000}, "amount"),
        ({"amount": "-1.00"}, "amount"),
        ({"amount": "0.00"}, "amount"),
        ({"amount": "1.001"}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": 149.99}, "amount"),
        ({"seller": 2**70}, "seller"),
        ({"seller": -(2**63)}, "seller"),
        ({"seller": 2**63 - 1}, "seller"),
        ({"seller": "x" * 10_000}, "seller"),
        ({"seller": True}, "seller"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "XXXX"}, "currency"),
        ({"description": "x" * 501}, "description"),
        ({"inspection_period_hours": 10**30}, "inspection_period_hours"),
        ({"inspection_period_hours": -1}, "inspection_period_hours"),
        ({"inspection_period_hours": 0}, "inspection_period_hours"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_absurd_values_are_400_naming_the_field(
    changes: dict[str, Any], field: str, api_client: Any, buyer: Any, seller: Any
) -> None:
    before = counts()
    response = api_client(buyer).post("/api/v1/escrows", {**VALID, **changes}, format="json")
    body = assert_problem(response, 400, "validation_error")
    assert field in {error["field"] for error in body["errors"]}, body
    assert counts() == before


@pytest.mark.parametrize("split", ["-1.00", "0", "99999999999999999999", "149.99", "NaN", "1e2", ""])
def test_absurd_split_amounts_are_refused(split: str, api_client: Any, buyer: Any, seller: Any, staff: Any) -> None:
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    assert as_buyer.post(f"/api/v1/sandbox/escrows/{escrow_id}/pay").status_code == 202
    assert as_buyer.post(f"/api/v1/escrows/{escrow_id}/dispute", {"reason": "broken"}, format="json").status_code == 202
    before = counts()
    response = api_client(staff).post(
        f"/api/v1/escrows/{escrow_id}/resolve", {"outcome": "split", "seller_amount": split}, format="json"
    )
    assert response.status_code == 400, response.content
    assert counts() == before
    assert Escrow.objects.get(pk=escrow_id).state == "DISPUTED"


def test_mutations_are_rate_limited_per_caller(api_client: Any, buyer: Any, seller: Any, stranger: Any) -> None:
    with override_settings(API_THROTTLE_RATES={"mutations": "3/min"}):
        as_buyer = api_client(buyer)
        for _ in range(3):
            assert as_buyer.post("/api/v1/escrows", VALID, format="json").status_code == 202
        before = counts()
        refused = as_buyer.post("/api/v1/escrows", VALID, format="json")
        assert_problem(refused, 429, "rate_limited")
        assert int(refused["Retry-After"]) > 0
        assert counts() == before
        # Reads are not limited, and another caller has a budget of their own.
        assert as_buyer.get("/api/v1/escrows").status_code == 200
        assert api_client(stranger).post("/api/v1/escrows", VALID, format="json").status_code == 202


def test_rate_limit_off_switch(api_client: Any, buyer: Any, seller: Any) -> None:
    with override_settings(API_THROTTLE_RATES={"mutations": None}):
        as_buyer = api_client(buyer)
        for _ in range(5):
            assert as_buyer.post("/api/v1/escrows", VALID, format="json").status_code == 202
