"""Helpers shared by the payment rail tests."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from apps.escrow.models import Escrow
from apps.outbox.models import OutboxMessage


def post_webhook(client: APIClient, provider: str, body: bytes, headers: dict[str, str]) -> Any:
    """POSTs a provider webhook to the public endpoint with the provider's headers."""
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    return client.post(f"/api/v1/webhooks/{provider}", data=body, content_type="application/json", **extra)


def assert_money_invariant(escrow_id: str) -> Escrow:
    escrow = Escrow.objects.get(pk=escrow_id)
    parts = (escrow.paid_out_minor, escrow.refunded_minor, escrow.fee_minor, escrow.held_minor)
    assert escrow.received_minor == sum(parts), (escrow.received_minor, parts)
    assert min((escrow.received_minor, *parts)) >= 0
    return escrow


def outbox_types(escrow_id: str) -> list[str]:
    return [
        t.rsplit(".", 1)[-1]
        for t in OutboxMessage.objects.filter(aggregate_id=escrow_id).order_by("id").values_list("type", flat=True)
    ]


def released_with_a_refused_transfer(fake_stripe: Any, as_buyer: APIClient, as_seller: APIClient, seller: Any) -> str:
    """Given: a funded, delivered and released card escrow whose seller is registered, and whose first
    transfer Stripe refused for good (a platform balance problem, fixed later by finance)."""
    from tests.helpers import act
    from tests.payments.test_stripe_rail import SELLER_ACCOUNT, funded_escrow

    fake_stripe.accounts.add(SELLER_ACCOUNT)
    assert (
        as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json").status_code
        == 200
    )
    fake_stripe.fail_next(
        "/v1/transfers",
        400,
        {"type": "invalid_request_error", "code": "balance_insufficient", "message": "Insufficient available balance"},
    )
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    act(as_buyer, escrow_id, "release")
    return escrow_id
