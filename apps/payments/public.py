"""What other apps may use of the payments service: payment instructions for the buyer, the webhook
entry point, and the sandbox's simulated payment."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.payments import webhooks
from apps.payments.models import PaymentArtifact
from apps.payments.movements import deliver_owed_webhooks
from apps.payments.providers import sandbox
from apps.payments.webhooks import WebhookOutcome, webhook_receive

__all__ = [
    "PaymentInstructions",
    "escrow_ids_on_rail",
    "payment_rails",
    "WebhookOutcome",
    "deliver_owed_webhooks",
    "payment_instructions",
    "payment_instructions_many",
    "payment_instructions_wait",
    "sandbox_pay",
    "webhook_receive",
]


@dataclass(frozen=True)
class PaymentInstructions:
    provider: str
    status: str
    client_secret: str
    deposit_address: str


def payment_instructions(escrow_id: str) -> PaymentInstructions | None:
    """The buyer's instructions for an escrow awaiting funds (read on every buyer's GET of it): one indexed
    statement, as SQL text built once (the ORM's compilation of it cost more than the read itself)."""
    from django.db import connection

    key = PaymentArtifact._meta.get_field("escrow_id").get_db_prep_value(escrow_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(_instructions_sql(), [key, PaymentArtifact.Kind.PAYMENT.value])
        row = cursor.fetchone()
    if row is None:
        return None
    provider, status, client_secret, deposit_address = row
    return PaymentInstructions(
        provider=provider, status=status, client_secret=client_secret, deposit_address=deposit_address
    )


@functools.cache
def _instructions_sql() -> str:
    # The same statement as PaymentArtifact.objects.filter(escrow_id=..., kind=PAYMENT).order_by("created_at")
    # .first(): the earliest payment artifact of the escrow.
    def column(name: str) -> str:
        return f'"{PaymentArtifact._meta.get_field(name).column}"'  # type: ignore[union-attr]

    columns = ", ".join(column(name) for name in ("provider", "status", "client_secret", "deposit_address"))
    return (
        f'SELECT {columns} FROM "{PaymentArtifact._meta.db_table}" WHERE {column("escrow_id")} = %s '
        f"AND {column('kind')} = %s ORDER BY {column('created_at')} ASC LIMIT 1"
    )


def payment_instructions_wait(escrow_id: str, *, timeout_seconds: float) -> PaymentInstructions | None:
    """payment_instructions, waiting (bounded) while the payments subscriber has not issued them yet:
    the escrow's CreatePaymentIntent is committed, its provider call may still be running."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        found = payment_instructions(escrow_id)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.005)


def payment_instructions_many(escrow_ids: list[str]) -> dict[str, PaymentInstructions]:
    """payment_instructions for a page of escrows in one query (a list answer must not cost a query
    per row). Escrows without a payment artifact are absent from the result."""
    found: dict[str, PaymentInstructions] = {}
    if not escrow_ids:
        return found
    artifacts = PaymentArtifact.objects.filter(escrow_id__in=escrow_ids, kind=PaymentArtifact.Kind.PAYMENT).order_by(
        "created_at"
    )
    for artifact in artifacts:
        # The first (oldest) artifact per escrow wins, as in payment_instructions.
        found.setdefault(
            str(artifact.escrow_id),
            PaymentInstructions(
                provider=artifact.provider,
                status=artifact.status,
                client_secret=artifact.client_secret,
                deposit_address=artifact.deposit_address,
            ),
        )
    return found


class SandboxUnavailable(Exception):
    pass


def sandbox_pay(escrow_id: str) -> WebhookOutcome:
    """Simulates the buyer paying in full: the sandbox sends a signed payment_intent.succeeded webhook
    through the same verified path a real provider's takes."""
    if settings.PAYMENTS_PROVIDER != "sandbox":
        raise SandboxUnavailable("the sandbox provider is not enabled")
    artifact = PaymentArtifact.objects.filter(
        escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT, provider=sandbox.SandboxProvider.name
    ).first()
    if artifact is None:
        raise SandboxUnavailable("this escrow has no sandbox payment to pay")
    obj = {**artifact.raw, "status": "succeeded", "amount_received": artifact.amount_minor}
    return sandbox.deliver_webhook("payment_intent.succeeded", obj)


__all__ += ["SandboxUnavailable", "webhooks"]

# Sellers' payout destinations (see payouts.py for what happens to a release before one exists).
from apps.payments.payouts import (  # noqa: E402
    Destination,
    InvalidPayoutDestination,
    destination_get,
    destination_set,
    waiting_payouts_count,
)

__all__ += ["Destination", "InvalidPayoutDestination", "destination_get", "destination_set", "waiting_payouts_count"]

# The buyer's checkout (capability links, the page's content per rail, the sandbox card form).
from apps.payments.checkout import (  # noqa: E402
    CardNumberInvalid,
    CardOutcome,
    Checkout,
    CheckoutGrant,
    CheckoutLinkExpired,
    CheckoutLinkInvalid,
    CheckoutUnavailable,
    checkout_get,
    checkout_path,
    checkout_token_read,
    checkout_url,
    sandbox_card_pay,
    stripe_checkout_start,
)

__all__ += [
    "CardNumberInvalid",
    "CardOutcome",
    "Checkout",
    "CheckoutGrant",
    "CheckoutLinkExpired",
    "CheckoutLinkInvalid",
    "CheckoutUnavailable",
    "checkout_get",
    "checkout_path",
    "checkout_token_read",
    "checkout_url",
    "sandbox_card_pay",
    "stripe_checkout_start",
]

# The payments service's bus subscriber (wired in escrow_project/bus.py).
from apps.payments.handlers import SUBSCRIBER  # noqa: E402

__all__ += ["SUBSCRIBER"]

# Getting paid by card: Stripe Connect Express onboarding (sandbox: a local page that completes at once).
from apps.payments.onboarding import (  # noqa: E402
    Onboarding,
    OnboardingLinkInvalid,
    OnboardingUnavailable,
    PayoutStatus,
    onboarding_get,
    onboarding_link_read,
    onboarding_refresh,
    onboarding_start,
    payout_settings_url,
    payout_status,
    payout_waiting_words,
    sandbox_onboarding_complete,
)

__all__ += [
    "Onboarding",
    "OnboardingLinkInvalid",
    "OnboardingUnavailable",
    "onboarding_get",
    "onboarding_link_read",
    "onboarding_refresh",
    "onboarding_start",
    "PayoutStatus",
    "payout_settings_url",
    "payout_status",
    "payout_waiting_words",
    "sandbox_onboarding_complete",
]


def payment_rails() -> list[str]:
    """The rails (providers) escrows have been collected through, sorted."""
    from apps.payments.models import PaymentOrder

    return sorted(set(PaymentOrder.objects.values_list("provider", flat=True).distinct()))


def escrow_ids_on_rail(rail: str) -> Any:
    """The ids of the escrows collected through this rail, as a queryset (usable as a subquery)."""
    from apps.payments.models import PaymentOrder

    return PaymentOrder.objects.filter(provider=rail).values("escrow_id")
