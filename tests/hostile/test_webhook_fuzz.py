"""Random bodies and random signature headers on the webhook endpoints never change state and never get
a 5xx. The most dangerous inputs are included: well-formed provider events naming our real payment,
transfer and refund objects, signed with a wrong secret or a stale timestamp."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.escrow.models import Escrow
from apps.payments import public as payments
from apps.payments.models import PaymentArtifact, WebhookEvent
from apps.payments.providers import stripe_signature
from apps.payments.webhooks import HANDLERS
from tests.helpers import act, create_escrow, pay
from tests.hostile.test_authorization_matrix import counts
from tests.properties.figures import record_figures

TRIED = {"http_webhooks": 0, "sandbox_webhooks": 0}
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def provider_events(object_ids: list[str]) -> st.SearchStrategy[bytes]:
    """Stripe-shaped events about our own objects: exactly what a forger would send."""
    obj = st.fixed_dictionaries(
        {
            "id": st.sampled_from(object_ids) | st.text(max_size=30),
            "status": st.sampled_from(["succeeded", "failed"]),
            "amount": st.integers(min_value=-10, max_value=10**12),
            "amount_received": st.integers(0, 10**12),
            "currency": st.sampled_from(["usd", "eur", ""]),
            "payment_intent": st.sampled_from(object_ids),
        },
    )
    event = st.fixed_dictionaries(
        {
            "id": st.text(alphabet=PRINTABLE, min_size=1, max_size=40),
            "type": st.sampled_from(sorted(HANDLERS)) | st.text(max_size=30),
            "created": st.integers(0, 2**40),
            "data": st.fixed_dictionaries({"object": obj}),
        }
    )
    return event.map(lambda e: json.dumps(e).encode())


bodies = st.binary(max_size=2_000) | json_values.map(lambda v: json.dumps(v).encode())


def signature_headers() -> st.SearchStrategy[dict[str, str]]:
    # Timestamps relative to now, fixed at use, so the strategy itself does not depend on the clock.
    forged = st.builds(
        lambda offset, sig: f"t={int(time.time()) + offset},v1={sig}",
        st.integers(min_value=-(10**6), max_value=10**6) | st.just(0),
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "Stripe-Signature": forged | st.text(alphabet=PRINTABLE, max_size=200),
            "X-Circle-Signature": st.text(alphabet=PRINTABLE, max_size=200),
            "X-Circle-Key-Id": st.text(alphabet=PRINTABLE, max_size=50),
        },
    )


def wrongly_signed(body: bytes, *, stale: bool) -> dict[str, str]:
    timestamp = int(time.time()) - (3_600 if stale else 0)
    secret = "whsec_not_ours" if not stale else "whsec_not_ours_either"
    return {
        "Stripe-Signature": stripe_signature.sign(
            body=body.decode(errors="replace"), secret=secret, timestamp=timestamp
        )
    }


@pytest.fixture
def funded_escrow(api_client: Any, buyer: Any, seller: Any) -> dict[str, Any]:
    """An escrow with money held and a dispute-free history, plus the provider ids a forger would target."""
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="500.00")["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    ids = list(PaymentArtifact.objects.values_list("provider_id", flat=True))
    return {"id": escrow_id, "object_ids": ids}


def protected_state(escrow_id: str) -> tuple[Any, ...]:
    escrow = Escrow.objects.get(pk=escrow_id)
    return (
        counts(),
        escrow.state,
        escrow.version,
        escrow.received_minor,
        escrow.held_minor,
        escrow.paid_out_minor,
        escrow.refunded_minor,
        escrow.attention,
        sorted(PaymentArtifact.objects.values_list("provider_id", "status")),
    )


FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_random_webhooks_over_http_change_nothing(
    data: st.DataObject, client_factory: Any, funded_escrow: dict[str, Any]
) -> None:
    path = data.draw(st.sampled_from(["/api/v1/webhooks/stripe", "/api/v1/webhooks/custodian"]))
    body = data.draw(bodies | provider_events(funded_escrow["object_ids"]))
    headers = data.draw(signature_headers())
    before = protected_state(funded_escrow["id"])
    response = client_factory().generic(
        "POST",
        path,
        body,
        content_type="application/json",
        **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()},
    )
    TRIED["http_webhooks"] += 1
    assert response.status_code < 500, response.content
    assert response.status_code in (400, 404, 413), response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert protected_state(funded_escrow["id"]) == before


@FUZZ
@given(data=st.data())
def test_forged_provider_events_change_nothing(data: st.DataObject, funded_escrow: dict[str, Any]) -> None:
    """Through the sandbox provider, whose verifier is live in every deployment: only its secret counts."""
    body = data.draw(provider_events(funded_escrow["object_ids"]) | bodies)
    headers = data.draw(signature_headers() | st.booleans().map(lambda stale: wrongly_signed(body, stale=stale)))
    before = protected_state(funded_escrow["id"])
    rejected_before = WebhookEvent.objects.filter(status=WebhookEvent.Status.REJECTED).count()
    outcome = payments.webhook_receive(provider="sandbox", body=body, headers=headers)
    TRIED["sandbox_webhooks"] += 1
    assert outcome.http_status in (400, 413), outcome
    assert protected_state(funded_escrow["id"]) == before
    # Stored raw for forensics, and marked rejected: never processed.
    assert WebhookEvent.objects.filter(status=WebhookEvent.Status.REJECTED).count() == rejected_before + 1
    assert not WebhookEvent.objects.exclude(
        status__in=[WebhookEvent.Status.REJECTED, WebhookEvent.Status.PROCESSED]
    ).exists()


@pytest.fixture
def client_factory() -> Any:
    from rest_framework.test import APIClient

    return APIClient


def test_record_figures() -> None:
    record_figures("hostile_webhooks", dict(TRIED))


@pytest.mark.parametrize(
    ("body", "signature"), [(b"\x00", "t=1,v1=00"), (b'{"id":"evt_1"}', "t=1,v1=\x00"), (b"\xff\xfe\x00{", "")]
)
def test_nul_bytes_are_rejected_and_stored_not_a_5xx(
    body: bytes, signature: str, funded_escrow: dict[str, Any]
) -> None:
    """PostgreSQL refuses NUL in text columns: storing the raw request must not turn into a 500."""
    before = protected_state(funded_escrow["id"])
    outcome = payments.webhook_receive(provider="sandbox", body=body, headers={"Stripe-Signature": signature})
    assert outcome.http_status == 400, outcome
    stored = WebhookEvent.objects.get(pk=outcome.webhook_id)
    assert stored.status == WebhookEvent.Status.REJECTED and "\x00" not in stored.body
    assert protected_state(funded_escrow["id"]) == before
