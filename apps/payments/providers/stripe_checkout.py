"""Stripe's hosted surfaces: Checkout Sessions for the buyer's card payment, and Connect Express accounts
with Account Links for the seller's onboarding. Same SDK client, timeouts and error mapping as
providers/stripe.py; kept apart from the payment-command calls there (their webhooks' objects are re-read
by StripeProvider.refresh_event, like every Stripe object).

Why Checkout rather than our page with the Payment Element: the Payment Element needs Stripe.js, which
must be loaded from Stripe's own host (PCI), and the web app serves every asset itself; Checkout also
handles 3-D Secure, wallets and receipts on Stripe's page, keeps card data off our pages entirely, and is
driven server-side, so it is tested end to end against the local fake.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone

from apps.payments.providers.stripe import ACCOUNT_FIELDS, SESSION_FIELDS, _call, _client, _kept

# Stripe refuses a session that expires sooner than 30 minutes or later than 24 hours from now.
SESSION_MIN = datetime.timedelta(minutes=31)
SESSION_MAX = datetime.timedelta(hours=23, minutes=59)


def session_expiry(deadline: datetime.datetime) -> datetime.datetime:
    now = timezone.now()
    return min(max(deadline, now + SESSION_MIN), now + SESSION_MAX)


def session_create(
    *,
    escrow_id: str,
    amount_minor: int,
    currency: str,
    success_url: str,
    cancel_url: str,
    expires_at: datetime.datetime,
    idempotency_key: str,
) -> dict[str, Any]:
    """A payment-mode session for the escrow's amount. Its PaymentIntent carries the escrow id and the
    transfer group, like the one the payment command creates, so transfers and refunds work the same."""
    session = _call(
        "create checkout session",
        lambda: _client().v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": currency.lower(),
                            "unit_amount": amount_minor,
                            "product_data": {"name": f"Escrow {escrow_id[:8]}"},
                        },
                    }
                ],
                "client_reference_id": escrow_id,
                "metadata": {"escrow_id": escrow_id},
                "payment_intent_data": {
                    "capture_method": "automatic",
                    "metadata": {"escrow_id": escrow_id},
                    "transfer_group": escrow_id,
                },
                "success_url": success_url,
                "cancel_url": cancel_url,
                "expires_at": int(expires_at.timestamp()),
            },
            options={"idempotency_key": idempotency_key},
        ),
    )
    return _kept(session, SESSION_FIELDS)


def session_expire(session_id: str) -> None:
    """Closes an open session so that nobody can pay it any more (the escrow was cancelled)."""
    _call("expire checkout session", lambda: _client().v1.checkout.sessions.expire(session_id))


def payment_intent_cancel(intent_id: str, *, idempotency_key: str) -> None:
    """The PaymentIntent a Checkout payment made redundant: cancelled so it cannot be paid as well."""
    _call(
        "cancel payment intent",
        lambda: _client().v1.payment_intents.cancel(intent_id, options={"idempotency_key": idempotency_key}),
    )


def account_create(*, seller_id: int, idempotency_key: str) -> dict[str, Any]:
    """A Connect Express account for the seller (no personal data from us: Stripe collects it)."""
    account = _call(
        "create connected account",
        lambda: _client().v1.accounts.create(
            params={
                "type": "express",
                "capabilities": {"transfers": {"requested": True}},
                "metadata": {"seller_id": str(seller_id)},
            },
            options={"idempotency_key": idempotency_key},
        ),
    )
    return _kept(account, ACCOUNT_FIELDS)


def account_link_create(*, account_id: str, refresh_url: str, return_url: str) -> str:
    link = _call(
        "create account link",
        lambda: _client().v1.account_links.create(
            params={
                "account": account_id,
                "refresh_url": refresh_url,
                "return_url": return_url,
                "type": "account_onboarding",
            },
        ),
    )
    return str(link.url)
