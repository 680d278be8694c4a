"""The sandbox provider: every payment, transfer and refund succeeds, and the outcome arrives as a
Stripe-shaped webhook, signed with the sandbox secret, through the same path real webhooks take.

A real provider is told our webhook URL; the sandbox is told payments' webhook entry point the same way,
once the app is ready (`endpoint_connect`, from apps/payments/apps.py), so this adapter imports nothing
of payments above it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings

from apps.payments.providers import stripe_signature
from apps.payments.providers.base import MoneyMovement, PaymentProvider, PaymentSetup, ProviderEvent

# payments' webhook entry point: (provider=, body=, headers=) -> the outcome (webhooks.webhook_receive).
_endpoint: Callable[..., Any] | None = None


def endpoint_connect(receive: Callable[..., Any]) -> None:
    global _endpoint
    _endpoint = receive


def webhook_secret() -> str:
    if settings.SANDBOX_WEBHOOK_SECRET:
        return settings.SANDBOX_WEBHOOK_SECRET
    digest = hmac.new(settings.SECRET_KEY.encode(), b"sandbox-webhooks", hashlib.sha256).hexdigest()
    return f"whsec_sandbox_{digest[:32]}"


def _object_id(prefix: str, idempotency_key: str) -> str:
    # Same key, same object: the sandbox is idempotent like the real providers.
    return f"{prefix}_sbx_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


class SandboxProvider(PaymentProvider):
    name = "sandbox"

    def create_payment(self, *, escrow_id: str, amount_minor: int, currency: str, idempotency_key: str) -> PaymentSetup:
        payment_id = _object_id("pi", idempotency_key)
        secret = hmac.new(settings.SECRET_KEY.encode(), payment_id.encode(), hashlib.sha256).hexdigest()[:24]
        obj = {
            "id": payment_id,
            "object": "payment_intent",
            "amount": amount_minor,
            "currency": currency.lower(),
            "status": "requires_payment_method",
            "metadata": {"escrow_id": escrow_id},
            "transfer_group": escrow_id,
        }
        return PaymentSetup(provider_payment_id=payment_id, client_secret=f"{payment_id}_secret_{secret}", raw=obj)

    def create_transfer(
        self,
        *,
        escrow_id: str,
        destination: str,
        amount_minor: int,
        currency: str,
        source_payment_id: str,
        idempotency_key: str,
    ) -> MoneyMovement:
        obj: dict[str, Any] = {
            "id": _object_id("tr", idempotency_key),
            "object": "transfer",
            "amount": amount_minor,
            "currency": currency.lower(),
            "destination": destination,
            "source_transaction": source_payment_id,
            "transfer_group": escrow_id,
            "metadata": {"escrow_id": escrow_id},
        }
        return MoneyMovement(provider_id=obj["id"], raw=obj)

    def unregistered_destination(self, *, seller_id: int) -> str | None:
        # Nobody registers anything in the sandbox: every seller has a simulated connected account.
        return f"acct_sbx_seller_{seller_id}"

    def create_refund(
        self,
        *,
        escrow_id: str,
        payment_id: str,
        destination: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
    ) -> MoneyMovement:
        obj: dict[str, Any] = {
            "id": _object_id("re", idempotency_key),
            "object": "refund",
            "amount": amount_minor,
            "currency": currency.lower(),
            "payment_intent": payment_id,
            "status": "pending",
            "metadata": {"escrow_id": escrow_id},
        }
        return MoneyMovement(provider_id=obj["id"], raw=obj)

    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        return stripe_signature.verify(body=body, headers=headers, secret=webhook_secret())

    def after_commit(self, *, kind: str, movement: MoneyMovement) -> None:
        if kind == "transfer":
            deliver_webhook("transfer.created", movement.raw)
        elif kind == "refund":
            deliver_webhook("refund.updated", {**movement.raw, "status": "succeeded"})


def signed_event(event_type: str, obj: dict[str, Any], *, attempt: str = "") -> tuple[bytes, dict[str, str]]:
    """A Stripe-shaped event for `obj`, and the headers a provider would sign it with. The event id is
    derived from the object's state (a repeat is the same event), and from `attempt` when each try is
    a fact of its own (one declined card, then another)."""
    fingerprint = f"{event_type}:{obj['id']}:{obj.get('status', '')}" + (f":{attempt}" if attempt else "")
    event = {
        "id": f"evt_sbx_{hashlib.sha256(fingerprint.encode()).hexdigest()[:24]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }
    body = json.dumps(event, separators=(",", ":"))
    return body.encode(), {"Stripe-Signature": stripe_signature.sign(body=body, secret=webhook_secret())}


def deliver_webhook(event_type: str, obj: dict[str, Any], *, attempt: str = "") -> Any:
    if _endpoint is None:
        raise RuntimeError("the sandbox has no webhook endpoint: apps.payments is not ready")
    body, headers = signed_event(event_type, obj, attempt=attempt)
    return _endpoint(provider=SandboxProvider.name, body=body, headers=headers)
