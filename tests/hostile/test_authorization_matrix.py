"""Every endpoint of apps/gateway/urls.py against every kind of caller, with the status each must get.

Escrow-scoped actions run on an escrow in the state where the action is legal for its rightful caller,
so a refusal can only come from who is asking. Every refused cell also proves that nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import get_resolver
from rest_framework.test import APIClient

from apps.escrow.models import Escrow, EscrowEvent, Evidence
from apps.gateway.models import IdempotencyRecord
from apps.gateway.tokens import mint_access_token
from apps.outbox.models import OutboxMessage
from apps.payments.models import PaymentArtifact
from tests.helpers import act, create_escrow, pay
from tests.hostile import credentials

PARTIES = ("buyer", "seller", "stranger", "staff")
BAD_CREDENTIALS = ("anonymous", "expired", "alg_none", "tampered", "deactivated")
ROLES = PARTIES + BAD_CREDENTIALS

# Escrow-scoped endpoints: (method, action, the state it is legal in, body, status per party).
# The escrows are created by the buyer, so the seller is the counterparty who accepts or declines.
ESCROW_ACTIONS: dict[str, tuple[str, str, dict[str, Any] | None, dict[str, int]]] = {
    "escrow-accept": ("accept", "AWAIT_ACCEPTANCE", None, {"buyer": 403, "seller": 202, "stranger": 404, "staff": 403}),
    "escrow-decline": (
        "decline",
        "AWAIT_ACCEPTANCE",
        {"reason": "not at that price"},
        {"buyer": 403, "seller": 202, "stranger": 404, "staff": 403},
    ),
    # Before acceptance only the creator (or staff) cancels; the counterparty declines instead.
    "escrow-cancel (unaccepted)": (
        "cancel",
        "AWAIT_ACCEPTANCE",
        {"reason": "no longer needed"},
        {"buyer": 202, "seller": 403, "stranger": 404, "staff": 202},
    ),
    "escrow-deliver": ("deliver", "FUNDS_HELD", None, {"buyer": 403, "seller": 202, "stranger": 404, "staff": 403}),
    "escrow-release": ("release", "DELIVERED", None, {"buyer": 202, "seller": 403, "stranger": 404, "staff": 202}),
    "escrow-cancel": (
        "cancel",
        "AWAIT_FUNDS",
        {"reason": "no longer needed"},
        {"buyer": 202, "seller": 202, "stranger": 404, "staff": 202},
    ),
    "escrow-dispute": (
        "dispute",
        "FUNDS_HELD",
        {"reason": "item not as described"},
        {"buyer": 202, "seller": 202, "stranger": 404, "staff": 403},
    ),
    "escrow-resolve": (
        "resolve",
        "DISPUTED",
        {"outcome": "refund"},
        {"buyer": 403, "seller": 403, "stranger": 404, "staff": 202},
    ),
    "sandbox-pay": ("pay", "AWAIT_FUNDS", None, {"buyer": 202, "seller": 403, "stranger": 404, "staff": 404}),
}
# Multipart uploads to an escrow: (the state it is legal in, status per party).
ESCROW_UPLOADS: dict[str, tuple[str, dict[str, int]]] = {
    "escrow-evidence": ("DISPUTED", {"buyer": 201, "seller": 201, "stranger": 404, "staff": 404}),
}
ESCROW_READS: dict[str, tuple[str, dict[str, int]]] = {
    "escrow-detail": ("", {"buyer": 200, "seller": 200, "stranger": 404, "staff": 200}),
    "escrow-events": ("/events", {"buyer": 200, "seller": 200, "stranger": 404, "staff": 200}),
}
# The caller's own resources: every valid user gets their own (GET), nobody else's.
USER_READS = {
    "escrow-list": "/api/v1/escrows",
    "payout-destination": "/api/v1/payout-destination",
    "me-discord-link": "/api/v1/me/discord-link",
    "me-notification-preferences": "/api/v1/me/notification-preferences",
}
# The caller's own actions (POST, no body): every valid user may, for themselves only.
USER_POSTS = {"payout-onboarding": "/api/v1/payout-destination/onboarding"}
PUBLIC = {
    "health": "/api/v1/health",
    "ready": "/api/v1/ready",
    "metrics": "/api/v1/metrics",
    "schema": "/api/v1/schema",
    "docs": "/api/v1/docs",
    "redoc": "/api/v1/redoc",
}
WEBHOOKS = {"webhook-stripe": "/api/v1/webhooks/stripe", "webhook-custodian": "/api/v1/webhooks/custodian"}
CREATE = {"escrow-list"}  # POST /escrows shares its URL name with the list


def every_cell() -> list[tuple[str, str]]:
    names = [
        *ESCROW_ACTIONS,
        *ESCROW_UPLOADS,
        *ESCROW_READS,
        *USER_READS,
        *USER_POSTS,
        *PUBLIC,
        *WEBHOOKS,
        "escrows-create",
    ]
    return [(name, role) for name in names for role in ROLES]


def counts() -> dict[str, int]:
    return {
        "escrows": Escrow.objects.count(),
        "events": EscrowEvent.objects.count(),
        "outbox": OutboxMessage.objects.count(),
        "artifacts": PaymentArtifact.objects.count(),
        "idempotency": IdempotencyRecord.objects.count(),
        "evidence": Evidence.objects.count(),
    }


def test_the_matrix_covers_every_endpoint() -> None:
    """A new endpoint fails here until someone decides who may call it."""
    gateway = next(p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/")
    names = {p.name for p in gateway.url_patterns}
    covered = {*ESCROW_ACTIONS, *ESCROW_UPLOADS, *ESCROW_READS, *USER_READS, *USER_POSTS, *PUBLIC, *WEBHOOKS, *CREATE}
    if not names <= covered:
        pytest.fail(f"endpoints missing from the authorization matrix: {sorted(names - covered)}")


def bring_to(state: str, *, buyer: Any, seller: Any, staff: Any) -> str:
    as_buyer, as_seller = APIClient(), APIClient()
    as_buyer.credentials(HTTP_AUTHORIZATION=f"Bearer {mint_access_token(buyer)}")
    as_seller.credentials(HTTP_AUTHORIZATION=f"Bearer {mint_access_token(seller)}")
    escrow_id = create_escrow(as_buyer, seller=seller, amount="250.00", accept=state != "AWAIT_ACCEPTANCE")["escrow_id"]
    steps = {
        "AWAIT_ACCEPTANCE": [],
        "AWAIT_FUNDS": [],
        "FUNDS_HELD": ["pay"],
        "DELIVERED": ["pay", "deliver"],
        "DISPUTED": ["pay", "dispute"],
    }[state]
    for step in steps:
        if step == "pay":
            assert pay(as_buyer, escrow_id).status_code == 202
        elif step == "deliver":
            assert act(as_seller, escrow_id, "deliver").status_code == 202
        else:
            assert act(as_buyer, escrow_id, "dispute", {"reason": "never arrived"}).status_code == 202
    assert Escrow.objects.get(pk=escrow_id).state == state
    return escrow_id


def client_for(role: str, people: dict[str, Any]) -> APIClient:
    client = APIClient()
    buyer = people["buyer"]
    token = {
        "anonymous": lambda: None,
        "expired": lambda: credentials.expired_token(buyer),
        "alg_none": lambda: credentials.alg_none_token(buyer),
        "tampered": lambda: credentials.tampered_token(people["stranger"], as_user=buyer),
        "deactivated": lambda: credentials.deactivated_user_token(buyer),
    }.get(role, lambda: mint_access_token(people[role]))()
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.parametrize(("endpoint", "role"), every_cell())
def test_authorization(endpoint: str, role: str, buyer: Any, seller: Any, stranger: Any, staff: Any) -> None:
    people = {"buyer": buyer, "seller": seller, "stranger": stranger, "staff": staff}
    bad = role in BAD_CREDENTIALS
    request: Callable[[APIClient], Any]
    escrow_id = None

    if endpoint in ESCROW_ACTIONS:
        action, state, body, expected_by_party = ESCROW_ACTIONS[endpoint]
        escrow_id = bring_to(state, buyer=buyer, seller=seller, staff=staff)
        expected = 401 if bad else expected_by_party[role]
        if action == "pay":

            def request(c: APIClient) -> Any:
                return pay(c, escrow_id)
        else:

            def request(c: APIClient) -> Any:
                return act(c, escrow_id, action, body)
    elif endpoint in ESCROW_UPLOADS:
        state, expected_by_party = ESCROW_UPLOADS[endpoint]
        escrow_id = bring_to(state, buyer=buyer, seller=seller, staff=staff)
        expected = 401 if bad else expected_by_party[role]

        def request(c: APIClient) -> Any:
            return c.post(
                f"/api/v1/escrows/{escrow_id}/evidence",
                {"file": SimpleUploadedFile("note.txt", b"matrix evidence\n")},
                format="multipart",
            )
    elif endpoint in ESCROW_READS:
        suffix, expected_by_party = ESCROW_READS[endpoint]
        escrow_id = bring_to("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
        expected = 401 if bad else expected_by_party[role]

        def request(c: APIClient) -> Any:
            return c.get(f"/api/v1/escrows/{escrow_id}{suffix}")
    elif endpoint == "escrows-create":
        # Anyone may open an escrow as its buyer; the seller cannot trade with themselves.
        expected = 401 if bad else {"buyer": 202, "seller": 400, "stranger": 202, "staff": 202}[role]

        def request(c: APIClient) -> Any:
            return c.post(
                "/api/v1/escrows",
                {"seller": seller.username, "amount": "10.00", "currency": "USD", "description": "matrix"},
                format="json",
            )
    elif endpoint in USER_READS:
        expected = 401 if bad else 200

        def request(c: APIClient) -> Any:
            return c.get(USER_READS[endpoint])
    elif endpoint in USER_POSTS:
        expected = 401 if bad else 200

        def request(c: APIClient) -> Any:
            return c.post(USER_POSTS[endpoint])
    elif endpoint in PUBLIC:
        expected = 200

        def request(c: APIClient) -> Any:
            return c.get(PUBLIC[endpoint])
    else:
        # Providers do not use our tokens; only the signature counts, and this one has none: an unsigned
        # webhook is a bad request whether or not this deployment uses the provider.
        expected = 400

        def request(c: APIClient) -> Any:
            return c.post(WEBHOOKS[endpoint], {"id": "evt_1", "type": "payment_intent.succeeded"}, format="json")

    client = client_for(role, people)
    before = counts()
    state_before = Escrow.objects.get(pk=escrow_id).state if escrow_id else None
    response = request(client)

    assert response.status_code == expected, (endpoint, role, response.status_code, response.content[:300])
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/problem+json")
        if response.status_code == 401:
            assert response["WWW-Authenticate"].startswith("Bearer")
        assert counts() == before, "a refused request changed something"
        if escrow_id:
            assert Escrow.objects.get(pk=escrow_id).state == state_before
    elif response.status_code == 202 and escrow_id:
        assert Escrow.objects.get(pk=escrow_id).state != state_before, "accepted but nothing happened"
