"""The buyer's checkout: a capability link naming one escrow that expires with its funding deadline, what
the checkout page shows for each rail, and the sandbox's card form.

The link is the authority to pay, not to read anything else: whoever holds it (the buyer, arriving from
a Discord button without signing in) sees the amount and pays. It is signed with SECRET_KEY, so it cannot
be guessed or edited; it carries its own expiry, the funding deadline it was issued for.

Paying never moves money state here: the sandbox's card form sends the signed webhook a card network's
answer would cause, through the same verified path as every provider webhook, and the escrow reacts to
the PaymentSucceeded that path emits.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from apps.payments.models import PaymentArtifact
from apps.payments.providers import sandbox

LINK_SALT = "payments.checkout.v1"


class CheckoutLinkInvalid(Exception):
    """The link was not issued by us (tampered, truncated, or signed with another key)."""


class CheckoutLinkExpired(Exception):
    """The link was ours, but the funding deadline it was issued for has passed."""

    def __init__(self, escrow_id: str) -> None:
        super().__init__(f"the checkout link for {escrow_id} has expired")
        self.escrow_id = escrow_id


@dataclass(frozen=True)
class CheckoutGrant:
    escrow_id: str
    expires_at: datetime.datetime


def checkout_token(*, escrow_id: str, expires_at: datetime.datetime) -> str:
    """The same escrow and deadline give the same link: it carries its own expiry, and no signing time
    (`signing.dumps` adds one, which made the buyer's escrow body, and its ETag, change every second)."""
    return signing.Signer(salt=LINK_SALT).sign_object({"e": str(escrow_id), "x": int(expires_at.timestamp())})


def _signed_data(token: str) -> object:
    try:
        return signing.Signer(salt=LINK_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        pass
    # A link issued before links stopped carrying a signing time (`signing.dumps`) stays good until its
    # deadline, as it promised.
    try:
        return signing.loads(token, salt=LINK_SALT)
    except (signing.BadSignature, ValueError):
        raise CheckoutLinkInvalid("not a checkout link of ours") from None


def checkout_token_read(token: str) -> CheckoutGrant:
    data = _signed_data(token)
    if not isinstance(data, dict) or not isinstance(data.get("e"), str) or not isinstance(data.get("x"), int):
        raise CheckoutLinkInvalid("not a checkout link of ours")
    try:
        escrow_id = str(uuid.UUID(data["e"]))
    except ValueError:
        raise CheckoutLinkInvalid("not a checkout link of ours") from None
    expires_at = datetime.datetime.fromtimestamp(data["x"], tz=datetime.UTC)
    if timezone.now() >= expires_at:
        raise CheckoutLinkExpired(escrow_id)
    return CheckoutGrant(escrow_id=escrow_id, expires_at=expires_at)


def checkout_path(*, escrow_id: str, funding_deadline: datetime.datetime | None) -> str | None:
    """The checkout page's path for this escrow, or None when it has no funding deadline (not yet
    accepted) or the deadline has passed."""
    if funding_deadline is None or funding_deadline <= timezone.now():
        return None
    token = checkout_token(escrow_id=escrow_id, expires_at=funding_deadline)
    return reverse("web:checkout:page", kwargs={"token": token})


def checkout_url(*, escrow_id: str, funding_deadline: datetime.datetime | None) -> str | None:
    """The absolute checkout link (for the API, Discord buttons and DMs): PUBLIC_BASE_URL + the page."""
    path = checkout_path(escrow_id=escrow_id, funding_deadline=funding_deadline)
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{path}" if path else None


# --- what the page shows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
    escrow_id: str
    provider: str  # sandbox | stripe | custodian
    rail: str  # card | usdc
    amount_minor: int
    currency: str
    paid: bool
    failure_reason: str
    deposit_address: str
    # USDC: waiting (nothing arrived), seen (a deposit is on its way, not final), screened (it arrived and
    # the sending wallet passed screening), on_hold (screening flagged the sending wallet: compliance reviews).
    deposit_status: str


def _payment(escrow_id: str) -> PaymentArtifact | None:
    return (
        PaymentArtifact.objects.filter(escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT)
        .order_by("created_at")
        .first()
    )


def deposit_status_of(artifact: PaymentArtifact) -> str:
    raw: dict[str, Any] = artifact.raw or {}
    if artifact.status == PaymentArtifact.Status.SUCCEEDED:
        return "screened"
    if raw.get("blocked"):
        return "on_hold"
    if raw.get("seen"):
        return "seen"
    return "waiting"


def checkout_get(escrow_id: str) -> Checkout | None:
    """What the checkout page shows, or None while payments has not issued the payment yet."""
    artifact = _payment(escrow_id)
    if artifact is None:
        return None
    usdc = bool(artifact.deposit_address)
    return Checkout(
        escrow_id=str(artifact.escrow_id),
        provider=artifact.provider,
        rail="usdc" if usdc else "card",
        amount_minor=artifact.amount_minor,
        currency=artifact.currency,
        paid=artifact.status == PaymentArtifact.Status.SUCCEEDED,
        failure_reason=artifact.failure_reason,
        deposit_address=artifact.deposit_address,
        deposit_status=deposit_status_of(artifact) if usdc else "",
    )


# --- the sandbox's card form ---------------------------------------------------------------------------

# Stripe's test cards (https://docs.stripe.com/testing): these succeed...
SANDBOX_CARDS_SUCCEED = frozenset({"4242424242424242", "4000056655665556", "5555555555554444", "378282246310005"})
# ...and these are declined, with the code and the words Stripe's checkout shows the buyer.
SANDBOX_CARDS_DECLINED: dict[str, tuple[str, str]] = {
    "4000000000000002": ("generic_decline", "Your card was declined."),
    "4000000000009995": ("insufficient_funds", "Your card has insufficient funds."),
    "4000000000009987": ("lost_card", "Your card was declined."),
    "4000000000000069": ("expired_card", "Your card has expired."),
    "4000000000000127": ("incorrect_cvc", "Your card's security code is incorrect."),
}
NOT_A_TEST_CARD = (
    "card_declined",
    "Your card was declined. This is a sandbox: no real card is charged; use a test card such as 4242 4242 4242 4242.",
)


class CardNumberInvalid(ValueError):
    """Refused before any payment is attempted (what a hosted checkout refuses as the buyer types)."""


class CheckoutUnavailable(Exception):
    """This escrow cannot be paid here (no sandbox payment, or the sandbox is off)."""


@dataclass(frozen=True)
class CardOutcome:
    paid: bool
    message: str


def card_number_normalise(value: str) -> str:
    digits = value.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise CardNumberInvalid("Your card number is incomplete.")
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    if total % 10:
        raise CardNumberInvalid("Your card number is invalid.")
    return digits


def sandbox_card_pay(*, escrow_id: str, card_number: str) -> CardOutcome:
    """The sandbox's card network: a succeeding test card sends payment_intent.succeeded, a declined one
    payment_intent.payment_failed (with Stripe's decline code and message), both signed and through the
    webhook path. The card number itself is never stored or sent anywhere."""
    number = card_number_normalise(card_number)
    if settings.PAYMENTS_PROVIDER != "sandbox":
        raise CheckoutUnavailable("the sandbox provider is not enabled")
    artifact = PaymentArtifact.objects.filter(
        escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT, provider=sandbox.SandboxProvider.name
    ).first()
    if artifact is None:
        raise CheckoutUnavailable("this escrow has no sandbox payment to pay")
    if artifact.status == PaymentArtifact.Status.SUCCEEDED:
        return CardOutcome(paid=True, message="This deal is already paid.")
    if number in SANDBOX_CARDS_SUCCEED:
        obj = {**artifact.raw, "status": "succeeded", "amount_received": artifact.amount_minor}
        # Deterministic event id: a double submit is the same event, processed once.
        outcome = sandbox.deliver_webhook("payment_intent.succeeded", obj)
        if outcome.http_status >= 400:
            raise CheckoutUnavailable(f"the payment could not be recorded: {outcome.detail}")
        return CardOutcome(paid=True, message="Payment received.")
    decline_code, message = SANDBOX_CARDS_DECLINED.get(number, NOT_A_TEST_CARD)
    obj = {
        **artifact.raw,
        "status": "requires_payment_method",
        "last_payment_error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": decline_code,
            "message": message,
        },
    }
    # Each decline is a fact of its own (the buyer may try several cards).
    outcome = sandbox.deliver_webhook("payment_intent.payment_failed", obj, attempt=uuid.uuid4().hex)
    if outcome.http_status >= 400:
        raise CheckoutUnavailable(f"the payment could not be recorded: {outcome.detail}")
    return CardOutcome(paid=False, message=message)


# --- the live card rail: Stripe Checkout -----------------------------------------------------------------


def stripe_checkout_start(*, escrow_id: str, success_url: str, cancel_url: str, deadline: datetime.datetime) -> str:
    """The URL of Stripe's hosted page for this escrow: an open session is reused (a buyer clicking twice
    gets the same page), otherwise a new one is created (outside any transaction) and recorded."""
    from apps.payments.models import CheckoutSession
    from apps.payments.providers import stripe_checkout
    from apps.payments.providers.base import ProviderError

    artifact = PaymentArtifact.objects.filter(
        escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT, provider="stripe"
    ).first()
    if artifact is None or settings.PAYMENTS_PROVIDER != "live":
        raise CheckoutUnavailable("this deal is not paid by card through Stripe")
    if artifact.status == PaymentArtifact.Status.SUCCEEDED:
        raise CheckoutUnavailable("This deal is already paid.")
    soon = timezone.now() + datetime.timedelta(minutes=5)
    sessions = CheckoutSession.objects.filter(escrow_id=escrow_id, provider="stripe")
    open_session = sessions.filter(status=CheckoutSession.Status.OPEN, expires_at__gt=soon).order_by("-pk").first()
    if open_session is not None:
        return open_session.url
    try:
        session = stripe_checkout.session_create(
            escrow_id=escrow_id,
            amount_minor=artifact.amount_minor,
            currency=artifact.currency,
            success_url=success_url,
            cancel_url=cancel_url,
            expires_at=stripe_checkout.session_expiry(deadline),
            # One key per session we ever open for this escrow: a concurrent second click replays the first.
            idempotency_key=f"checkout-{artifact.idempotency_key}-{sessions.count()}",
        )
    except ProviderError as exc:
        raise CheckoutUnavailable("Card payment is unavailable right now; try again in a minute.") from exc
    expires = datetime.datetime.fromtimestamp(int(session.get("expires_at") or 0), tz=datetime.UTC)
    row, _ = CheckoutSession.objects.get_or_create(
        session_id=session["id"],
        defaults={"escrow_id": escrow_id, "provider": "stripe", "url": session["url"], "expires_at": expires},
    )
    return row.url


def on_checkout_session_paid(record: Any, event: Any) -> bool:
    """checkout.session.completed (paid at once) or .async_payment_succeeded, re-read from Stripe: the
    session's PaymentIntent becomes the escrow's payment (the one the payment command created is
    cancelled once this commits, so it cannot be paid as well), and PaymentSucceeded is emitted with what
    Stripe collected. A payment into an escrow that is already funded is counted, never dropped (the
    escrow puts it in front of ops), as a second deposit is."""
    from django.db import transaction

    from apps.payments import movements, services
    from apps.payments.models import CheckoutSession
    from proto.payments import v1 as payments_v1

    obj = event.object
    if not isinstance(obj.get("id"), str):
        return False
    session = CheckoutSession.objects.filter(session_id=obj["id"], provider=record.provider).first()
    if session is None or obj.get("payment_status") != "paid":
        return False  # not ours, or an asynchronous method still settling (its own event follows)
    intent_id, amount, currency = obj.get("payment_intent"), obj.get("amount_total"), obj.get("currency")
    if not isinstance(intent_id, str) or not isinstance(amount, int) or not isinstance(currency, str):
        raise ValueError("a paid checkout session without payment_intent, amount_total or currency")
    order = services.lock_order(str(session.escrow_id))
    artifact = (
        PaymentArtifact.objects.select_for_update()
        .filter(escrow_id=session.escrow_id, kind=PaymentArtifact.Kind.PAYMENT, provider=record.provider)
        .order_by("created_at")
        .first()
    )
    if order is None or artifact is None:
        return False
    CheckoutSession.objects.filter(pk=session.pk).update(
        status=CheckoutSession.Status.COMPLETE, updated_at=timezone.now()
    )
    if intent_id == artifact.provider_id or intent_id in artifact.raw.get("deposits", []):
        return False  # counted already (a redelivery, or its payment_intent.succeeded came first)
    if artifact.status == PaymentArtifact.Status.SUCCEEDED:
        return movements.deposit_accept(
            order=order,
            artifact=artifact,
            deposit=intent_id,
            obj={"amount_received": amount, "currency": currency},
            verified=(record, event),
        )
    replaced = artifact.provider_id
    artifact.provider_id = intent_id
    artifact.status = PaymentArtifact.Status.SUCCEEDED
    artifact.client_secret = ""  # the replaced PaymentIntent's; it is cancelled
    artifact.raw = {
        **artifact.raw,
        "id": intent_id,
        "replaced_payment_intent": replaced,
        "checkout_session": session.session_id,
    }
    artifact.save(update_fields=["provider_id", "status", "client_secret", "raw", "updated_at"])
    movements.webhook_verified(record, event, order, intent_id)
    services.emit(
        order,
        payments_v1.PaymentSucceeded(
            escrow_id=str(order.escrow_id),
            amount=services.money(amount, currency.upper()),
            provider=record.provider,
            provider_payment_id=intent_id,
        ),
        fact=f"{record.provider}:{intent_id}:succeeded",
    )
    transaction.on_commit(lambda: _cancel_replaced(replaced, escrow_id=str(order.escrow_id)), robust=True)
    return True


def _cancel_replaced(intent_id: str, *, escrow_id: str) -> None:
    import logging

    from apps.payments.providers import stripe_checkout
    from apps.payments.providers.base import ProviderError

    try:
        stripe_checkout.payment_intent_cancel(intent_id, idempotency_key=f"cancel-{intent_id}")
    except ProviderError as exc:
        # Paid in the meantime through its client secret: ops refund it (docs/payments.md, not done yet).
        logging.getLogger(__name__).error(
            "replaced payment intent not cancelled", extra={"escrow_id": escrow_id, "error": str(exc)}
        )


def on_checkout_session_expired(record: Any, event: Any) -> bool:
    from apps.payments.models import CheckoutSession

    if not isinstance(event.object.get("id"), str):
        return False
    return bool(
        CheckoutSession.objects.filter(
            session_id=event.object.get("id"),
            provider=record.provider,
            status=CheckoutSession.Status.OPEN,
        ).update(status=CheckoutSession.Status.EXPIRED, updated_at=timezone.now())
    )


def on_deposit_seen(record: Any, event: Any) -> bool:
    """An inbound transfer into an escrow's deposit wallet that the custodian sees but that is not final
    yet: remembered (by transaction id) so the deposit page can say the money is on its way. Nothing is
    counted until the transaction is COMPLETE and screened."""
    tx = event.object
    if (
        tx.get("transactionType") != "INBOUND"
        or not isinstance(tx.get("id"), str)
        or not isinstance(tx.get("walletId"), str)
    ):
        return False
    artifact = (
        PaymentArtifact.objects.select_for_update()
        .filter(provider=record.provider, kind=PaymentArtifact.Kind.PAYMENT, provider_id=tx.get("walletId"))
        .first()
    )
    if artifact is None or tx["id"] in artifact.raw.get("seen", []):
        return False
    artifact.raw = {**artifact.raw, "seen": [*artifact.raw.get("seen", []), tx["id"]]}
    artifact.save(update_fields=["raw", "updated_at"])
    return True


def sessions_expire_prepare(event: Any, delivery: Any) -> list[str]:
    """EscrowCancelled: the escrow's open Checkout sessions are expired at Stripe (outside any
    transaction), so a page left open in a browser cannot take money for a cancelled deal. A session
    Stripe will not expire (paid or expired meanwhile) is left to its own webhook."""
    from apps.payments.models import CheckoutSession
    from apps.payments.providers import stripe_checkout
    from apps.payments.providers.base import ProviderError

    expired = []
    for session in CheckoutSession.objects.filter(escrow_id=event.escrow_id, status=CheckoutSession.Status.OPEN):
        try:
            stripe_checkout.session_expire(session.session_id)
        except ProviderError as exc:
            if exc.transient:
                raise  # the bus retries; expiring twice is harmless
            continue
        expired.append(session.session_id)
    return expired


def sessions_expire_apply(event: Any, delivery: Any, expired: list[str]) -> None:
    from apps.payments.models import CheckoutSession

    CheckoutSession.objects.filter(session_id__in=expired, status=CheckoutSession.Status.OPEN).update(
        status=CheckoutSession.Status.EXPIRED, updated_at=timezone.now()
    )


WEBHOOK_HANDLERS = {
    "custodian.not_final": on_deposit_seen,
    "checkout.session.completed": on_checkout_session_paid,
    "checkout.session.async_payment_succeeded": on_checkout_session_paid,
    "checkout.session.expired": on_checkout_session_expired,
}
