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
    return [t.rsplit(".", 1)[-1] for t in
            OutboxMessage.objects.filter(aggregate_id=escrow_id).order_by("id").values_list("type", flat=True)]
