"""Every bad input the REST contract names gets its exact status and problem+json `code`, and changes
nothing: no escrow, no audit event, no outbox row, no idempotency record."""

from __future__ import annotations

import datetime
import json
from typing import Any

import jwt
import pytest
from allauth.headless.tokens.strategies.jwt import internal

from apps.gateway.tokens import mint_access_token
from tests.gateway.support import assert_problem, create_settled, error_fields, settle, table_counts
from tests.helpers import act, pay

ESCROWS = "/api/v1/escrows"


def valid_body(seller_user: Any, **override: Any) -> dict[str, Any]:
    return {"seller": seller_user.username, "amount": "149.99", "currency": "USD", "description": "Dominus", **override}


def post_raw(client: Any, path: str, raw: str, **headers: Any) -> Any:
    return client.post(path, data=raw, content_type="application/json", **headers)


# --- the create body ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["{not json", '{"seller": "seller",}', "\x00\x01"], ids=["garbage", "trailing-comma", "binary"]
)
def test_malformed_json_is_refused(api_client, buyer, seller, raw):
    client, before = api_client(buyer), table_counts()

    response = post_raw(client, ESCROWS, raw, HTTP_IDEMPOTENCY_KEY="k-malformed")

    assert_problem(response, 400, "malformed_json")
    assert table_counts() == before


@pytest.mark.parametrize("raw", ["[1, 2]", '"a string"', "42", "null", "true"])
def test_a_body_that_is_not_an_object_is_refused(api_client, buyer, seller, raw):
    client, before = api_client(buyer), table_counts()

    response = post_raw(client, ESCROWS, raw)

    body = assert_problem(response, 400, "validation_error")
    assert error_fields(body) == {"body"}
    assert table_counts() == before


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"amount": 149.99}, "amount"),
        ({"amount": 14999}, "amount"),
        ({"seller": True}, "seller"),
        ({"seller": None}, "seller"),
        ({"seller": ["seller"]}, "seller"),
        ({"description": 42}, "description"),
        ({"description": ""}, "description"),
        ({"description": "x" * 501}, "description"),
        ({"currency": 840}, "currency"),
        ({"inspection_period_hours": "72"}, "inspection_period_hours"),
        ({"inspection_period_hours": True}, "inspection_period_hours"),
        ({"inspection_period_hours": 0}, "inspection_period_hours"),
        ({"inspection_period_hours": 721}, "inspection_period_hours"),
        ({"amount": "-1.00"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "0.00"}, "amount"),
        ({"amount": "0.99"}, "amount"),  # below the 1.00 minimum
        ({"amount": "1.001"}, "amount"),
        ({"amount": "1000000.01"}, "amount"),  # above the 1,000,000.00 maximum
        ({"amount": "9" * 40}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "Infinity"}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": " 149.99"}, "amount"),
        ({"amount": "149,99"}, "amount"),
        ({"amount": "0149.99"}, "amount"),
        ({"amount": "+149.99"}, "amount"),
        ({"amount": "149."}, "amount"),
        ({"amount": ""}, "amount"),
        ({"colour": "red"}, "colour"),
        ({"buyer": 1}, "buyer"),
        ({"seller": "nobody-by-this-name"}, "seller"),
        ({"seller": 999_999}, "seller"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "EUR"}, "currency"),  # a real currency this deployment does not take
    ],
    ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else str(value),
)
def test_a_bad_create_field_is_named_and_nothing_changes(api_client, buyer, seller, override, field):
    client, before = api_client(buyer), table_counts()

    response = client.post(ESCROWS, valid_body(seller, **override), format="json", HTTP_IDEMPOTENCY_KEY="k1")

    body = assert_problem(response, 400, "validation_error")
    assert field in error_fields(body), body
    assert table_counts() == before


@pytest.mark.parametrize("field", ["seller", "amount", "currency", "description"])
def test_a_missing_required_field_is_named(api_client, buyer, seller, field):
    client, before = api_client(buyer), table_counts()
    body = valid_body(seller)
    del body[field]

    response = client.post(ESCROWS, body, format="json")

    # the other party is `counterparty` (or the older `seller`); with neither, the error names counterparty
    named = "counterparty" if field == "seller" else field
    assert error_fields(assert_problem(response, 400, "validation_error")) == {named}
    assert table_counts() == before


@pytest.mark.parametrize("by", ["username", "id"])
def test_the_buyer_cannot_sell_to_themself(api_client, buyer, by):
    client, before = api_client(buyer), table_counts()

    response = client.post(
        ESCROWS,
        valid_body(buyer, seller=buyer.username if by == "username" else buyer.pk),
        format="json",
        HTTP_IDEMPOTENCY_KEY="self-trade",
    )

    assert error_fields(assert_problem(response, 400, "validation_error")) == {"seller"}
    assert table_counts() == before


def test_a_deactivated_seller_is_unknown(api_client, buyer, seller):
    client = api_client(buyer)
    seller.is_active = False
    seller.save()
    before = table_counts()

    response = client.post(ESCROWS, valid_body(seller), format="json")

    assert error_fields(assert_problem(response, 400, "validation_error")) == {"seller"}
    assert table_counts() == before


# --- authentication ----------------------------------------------------------------------------------


def _resigned(token: str, *, key: Any, algorithm: str, **claims: Any) -> str:
    payload = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode({**payload, **claims}, key, algorithm=algorithm)


def _alg_none(token: str) -> str:
    payload = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(payload, None, algorithm="none")


def _token(kind: str, user: Any) -> str | None:
    real = mint_access_token(user)
    config = internal._get_jwt_config()
    past = int((datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)).timestamp())
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "forged": _resigned(real, key="an-attacker's-key-that-is-long-enough", algorithm="HS256"),
        "expired": _resigned(real, key=config.signing_key, algorithm=config.algorithm, exp=past),
        "alg-none": _alg_none(real),
        "tampered-sub": _resigned(real, key="x" * 40, algorithm="HS256", sub="1"),
    }[kind]


@pytest.mark.parametrize("kind", ["missing", "garbage", "forged", "expired", "alg-none", "tampered-sub"])
@pytest.mark.parametrize("method", ["create", "list"])
def test_a_request_without_a_valid_token_is_refused(api_client, buyer, seller, kind, method):
    token = _token(kind, buyer)
    client = api_client()
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    before = table_counts()

    response = client.post(ESCROWS, valid_body(seller), format="json") if method == "create" else client.get(ESCROWS)

    assert_problem(response, 401, "not_authenticated" if kind == "missing" else "invalid_token")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert table_counts() == before


def test_a_deactivated_users_token_stops_working(api_client, buyer, seller):
    client = api_client(buyer)
    escrow_id = create_settled(client, seller=seller)["escrow_id"]
    buyer.is_active = False
    buyer.save()
    before = table_counts()

    assert_problem(client.get(f"{ESCROWS}/{escrow_id}"), 401, "invalid_token")
    assert_problem(act(client, escrow_id, "cancel"), 401, "invalid_token")
    assert_problem(client.post(ESCROWS, valid_body(seller), format="json"), 401, "invalid_token")
    assert table_counts() == before


# --- someone else's escrow ---------------------------------------------------------------------------


@pytest.fixture
def funded(api_client, buyer, seller) -> str:
    escrow_id = create_settled(api_client(buyer), seller=seller)["escrow_id"]
    assert pay(api_client(buyer), escrow_id).status_code == 202
    settle()
    return escrow_id


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("get", "/events", None),
        ("post", "/deliver", {}),
        ("post", "/release", {}),
        ("post", "/cancel", {}),
        ("post", "/dispute", {"reason": "mine now"}),
        ("post", "/resolve", {"outcome": "release"}),
        ("post", "/resolve", {"outcome": "split", "seller_amount": "1.00"}),
        ("sandbox", "/pay", None),
    ],
)
def test_a_stranger_gets_404_on_every_escrow_endpoint(api_client, stranger, funded, method, suffix, body):
    client, before = api_client(stranger), table_counts()

    if method == "get":
        response = client.get(f"{ESCROWS}/{funded}{suffix}")
    elif method == "sandbox":
        response = client.post(f"/api/v1/sandbox/escrows/{funded}/pay")
    else:
        response = client.post(f"{ESCROWS}/{funded}{suffix}", body, format="json", HTTP_IDEMPOTENCY_KEY="probe")

    problem = assert_problem(response, 404, "escrow_not_found")
    assert funded not in json.dumps(problem)
    assert table_counts() == before


def test_a_stranger_cannot_tell_a_real_escrow_from_a_missing_one(api_client, stranger, funded):
    client = api_client(stranger)
    missing = "00000000-0000-4000-8000-000000000000"

    real = client.post(f"{ESCROWS}/{funded}/cancel", {}, format="json").json()
    absent = client.post(f"{ESCROWS}/{missing}/cancel", {}, format="json").json()

    assert real == absent
    assert client.get(f"{ESCROWS}?state=FUNDS_HELD").json() == {"count": 0, "results": [], "next": None}


# --- the state machine -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "action", "body", "status", "code"),
    [
        ("buyer", "release", {}, 409, "invalid_transition"),  # not delivered yet
        ("buyer", "resolve", {"outcome": "release"}, 403, "not_allowed"),
        ("staff", "resolve", {"outcome": "refund"}, 409, "invalid_transition"),  # no dispute open
        ("buyer", "deliver", {}, 403, "not_allowed"),
        ("seller", "release", {}, 403, "not_allowed"),
        ("buyer", "cancel", {}, 403, "not_allowed"),  # after funding only the seller or staff may cancel
        ("staff", "dispute", {"reason": "x"}, 403, "not_allowed"),
    ],
)
def test_a_refused_command_says_why_and_changes_nothing(
    api_client, buyer, seller, staff, funded, who, action, body, status, code
):
    client = api_client({"buyer": buyer, "seller": seller, "staff": staff}[who])
    before = table_counts()

    problem = assert_problem(act(client, funded, action, body), status, code)

    assert problem["state"] == "FUNDS_HELD"
    assert table_counts() == before


def test_a_finished_escrow_refuses_every_command_with_409(api_client, buyer, seller, staff):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    assert act(as_buyer, escrow_id, "cancel").status_code == 202
    before = table_counts()

    for client, action, body in [
        (as_seller, "deliver", {}),
        (as_buyer, "release", {}),
        (as_buyer, "cancel", {}),
        (as_buyer, "dispute", {"reason": "late"}),
        (api_client(staff), "resolve", {"outcome": "refund"}),
    ]:
        problem = assert_problem(act(client, escrow_id, action, body), 409, "invalid_transition")
        assert problem["state"] == "CANCELLED"
    assert_problem(pay(as_buyer, escrow_id), 409, "invalid_transition")
    assert table_counts() == before


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("dispute", {}, "reason"),
        ("dispute", {"reason": 5}, "reason"),
        ("dispute", {"reason": "x", "severity": "high"}, "severity"),
        ("deliver", {"tracking": "1Z"}, "tracking"),
        ("release", {"amount": "1.00"}, "amount"),
        ("cancel", {"reason": False}, "reason"),
        ("resolve", {"outcome": "halves"}, "outcome"),
        ("resolve", {"outcome": "split"}, "seller_amount"),
        ("resolve", {"outcome": "split", "seller_amount": 100}, "seller_amount"),
        ("resolve", {"outcome": "split", "seller_amount": "1.001"}, "seller_amount"),
        ("resolve", {"outcome": "split", "seller_amount": "149.99"}, "seller_amount"),  # all of it is not a split
        ("resolve", {"outcome": "refund", "seller_amount": "1.00"}, "seller_amount"),
    ],
)
def test_a_bad_command_body_is_named(api_client, buyer, seller, staff, funded, action, body, field):
    if action == "resolve":
        assert act(api_client(buyer), funded, "dispute", {"reason": "broken"}).status_code == 202
    who = {"dispute": buyer, "deliver": seller, "release": buyer, "cancel": seller, "resolve": staff}[action]
    before = table_counts()

    response = act(api_client(who), funded, action, body)

    assert field in error_fields(assert_problem(response, 400, "validation_error"))
    assert table_counts() == before


# --- queries and ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?colour=red", "colour"),
        ("?page=2", "page"),
        ("?role=admin", "role"),
        ("?state=PAID", "state"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?offset=-1", "offset"),
        ("?limit=%C2%B2", "limit"),  # "²" passes str.isdigit()
        ("?offset=%EF%BC%91", "offset"),  # a full-width "1"
        ("?limit=1&limit=2", "limit"),
        ("?role=buyer&role=seller", "role"),
    ],
)
def test_bad_list_parameters_are_named(api_client, buyer, query, field):
    response = api_client(buyer).get(f"{ESCROWS}{query}")

    assert error_fields(assert_problem(response, 400, "validation_error")) == {field}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/escrows/not-a-uuid",
        "/api/v1/escrows/123/events",
        "/api/v1/escrows/123/cancel",
        "/api/v1/sandbox/escrows/xyz/pay",
        "/api/v1/nowhere",
    ],
)
def test_a_path_that_is_not_a_route_is_a_json_404(api_client, buyer, path):
    client, before = api_client(buyer), table_counts()

    response = client.post(path, {}, format="json") if path.endswith(("cancel", "pay")) else client.get(path)

    assert_problem(response, 404, "not_found")
    assert table_counts() == before


@pytest.mark.parametrize("path", [ESCROWS, "/api/v1/webhooks/stripe", "/api/v1/webhooks/custodian"])
def test_a_wrong_method_is_a_problem(api_client, buyer, path):
    before = table_counts()

    response = api_client(buyer).delete(path)

    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response["Allow"]
    assert table_counts() == before


def test_a_non_json_body_is_refused(api_client, buyer, seller):
    client, before = api_client(buyer), table_counts()

    response = client.post(ESCROWS, data="seller=seller&amount=1.00", content_type="application/x-www-form-urlencoded")

    assert_problem(response, 415, "unsupported_media_type")
    assert table_counts() == before


def test_an_oversized_body_is_413(api_client, buyer, seller):
    client, before = api_client(buyer), table_counts()

    response = client.post(ESCROWS, valid_body(seller, description="x" * 3_000_000), format="json")

    assert_problem(response, 413, "body_too_large")
    assert table_counts() == before
