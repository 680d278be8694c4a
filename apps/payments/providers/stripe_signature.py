"""Verification of Stripe's webhook signature scheme (`Stripe-Signature: t=...,v1=...`, HMAC-SHA256 over
"timestamp.body", 300 s tolerance), with the real SDK. The sandbox signs its webhooks the same way, so
both go through one verified path."""

from __future__ import annotations

import json
from collections.abc import Mapping

import stripe

from apps.payments.providers.base import ProviderEvent, WebhookVerificationError

TOLERANCE_SECONDS = 300


def verify(*, body: bytes, headers: Mapping[str, str], secret: str) -> ProviderEvent:
    header = headers.get("Stripe-Signature") or headers.get("stripe-signature")
    if not secret:
        raise WebhookVerificationError("webhook secret is not configured")
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, tolerance=TOLERANCE_SECONDS)
        event = json.loads(body)
    except stripe.SignatureVerificationError as exc:
        raise WebhookVerificationError(str(exc).split(". ")[0]) from None
    except (UnicodeDecodeError, ValueError):
        raise WebhookVerificationError("body is not UTF-8 JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise WebhookVerificationError("not an event object")
    obj = event["data"].get("object")
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str) or not isinstance(obj, dict):
        raise WebhookVerificationError("event lacks id, type or data.object")
    return ProviderEvent(id=event["id"], type=event["type"], object=obj, raw=event)


def sign(*, body: str, secret: str, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
