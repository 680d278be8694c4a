"""The sandbox provider: every payment, transfer and refund succeeds, and the outcome arrives as a
Stripe-shaped webhook, signed with the sandbox secret, through the same path real webhooks take."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from apps.payments.providers import stripe_signature
from apps.payments.providers.base import MoneyMovement, PaymentProvider, PaymentSetup, ProviderEvent


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
        seller_id: int,
        amount_minor: int,
        currency: str,
        source_payment_id: str,
        idempotency_key: str,
    ) -> MoneyMovement:
        obj = {
            "id": _object_id("tr", idempotency_key),
            "object": "transfer",
            "amount": amount_minor,
            "currency": currency.lower(),
            "destination": f"acct_sbx_seller_{seller_id}",
            "source_transaction": source_payment_id,
            "transfer_group": escrow_id,
            "metadata": {"escrow_id": escrow_id},
        }
        return MoneyMovement(provider_id=obj["id"], raw=obj)

    def create_refund(
        self, *, escrow_id: str, payment_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> MoneyMovement:
        obj = {
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

    def after_commit(self, *, kind: str, provider_id: str) -> None:
        from apps.payments.models import PaymentArtifact

        artifact = PaymentArtifact.objects.get(provider=self.name, provider_id=provider_id)
        if kind == PaymentArtifact.Kind.TRANSFER:
            deliver_webhook("transfer.created", artifact.raw)
        elif kind == PaymentArtifact.Kind.REFUND:
            deliver_webhook("refund.updated", {**artifact.raw, "status": "succeeded"})


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
    from apps.payments import webhooks

    body, headers = signed_event(event_type, obj, attempt=attempt)
    return webhooks.webhook_receive(provider=SandboxProvider.name, body=body, headers=headers)


# Stripe re-sends a webhook until it is acknowledged; the sandbox stands in for Stripe, so it must too.
# Its simulated webhook goes out after the transaction that recorded the transfer or refund commits: a
# process killed in between (found by tests/faults/test_worker_kill.py) left the escrow in RELEASING or
# REFUNDING for good. The bus worker's tick sends what is still owed after this long; the receiving side
# dedupes by event id, so a webhook that did arrive meanwhile is a no-op.
OWED_AFTER_SECONDS = 5.0


def deliver_owed_webhooks(*, limit: int = 100) -> int:
    """Sends the simulated webhook of every sandbox transfer or refund still pending after
    OWED_AFTER_SECONDS. Returns how many it sent."""
    import datetime

    from django.utils import timezone

    from apps.payments.models import PaymentArtifact

    cutoff = timezone.now() - datetime.timedelta(seconds=OWED_AFTER_SECONDS)
    owed = (
        PaymentArtifact.objects.filter(
            provider=SandboxProvider.name,
            status=PaymentArtifact.Status.PENDING,
            created_at__lte=cutoff,
            kind__in=[PaymentArtifact.Kind.TRANSFER, PaymentArtifact.Kind.REFUND],
        )
        .order_by("created_at")
        .values_list("kind", "provider_id")[:limit]
    )
    provider = SandboxProvider()
    sent = 0
    for kind, provider_id in owed:
        provider.after_commit(kind=kind, provider_id=provider_id)
        sent += 1
    return sent
