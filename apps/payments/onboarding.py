"""Getting paid by card: a seller is onboarded to a Stripe Connect Express account we create for them.

`onboarding_start` answers the URL to send the seller to: live, an Account Link to Stripe's hosted
onboarding (its refresh and return pages are ours, reached through a signed link naming the seller and the
account); sandbox, a local page that completes at once. The account's readiness comes only from the
`account.updated` webhook (re-read from Stripe): once it can receive transfers it becomes the seller's
payout destination, and payouts parked for a missing destination are sent with their original keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse

from apps.payments import payouts
from apps.payments.models import ConnectedAccount, PayoutDestination, WaitingPayout
from apps.payments.providers.base import ProviderError

LINK_SALT = "payments.onboarding.v1"
# Stripe's Account Links live minutes; our refresh and return pages accept the link for a day.
LINK_MAX_AGE_SECONDS = 24 * 3600
SANDBOX = "sandbox"


class OnboardingUnavailable(Exception):
    """Stripe could not be asked (answered 503 so the seller tries again)."""


class OnboardingLinkInvalid(Exception):
    """Tampered, expired, or naming an account that is not this seller's."""


@dataclass(frozen=True)
class Onboarding:
    seller_id: int
    account_id: str
    provider: str
    ready: bool
    charges_enabled: bool
    payouts_enabled: bool
    details_submitted: bool


def _of(row: ConnectedAccount) -> Onboarding:
    return Onboarding(
        seller_id=row.seller_id,
        account_id=row.account_id,
        provider=row.provider,
        ready=row.ready,
        charges_enabled=row.charges_enabled,
        payouts_enabled=row.payouts_enabled,
        details_submitted=row.details_submitted,
    )


def _absolute(name: str, token: str) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{reverse(name, kwargs={'token': token})}"


def _token(seller_id: int, account_id: str) -> str:
    return signing.dumps({"s": seller_id, "a": account_id}, salt=LINK_SALT)


def onboarding_link_read(token: str) -> Onboarding:
    try:
        data = signing.loads(token, salt=LINK_SALT, max_age=LINK_MAX_AGE_SECONDS)
    except signing.BadSignature:
        raise OnboardingLinkInvalid("not an onboarding link of ours, or too old") from None
    seller_id, account_id = (data.get("s"), data.get("a")) if isinstance(data, dict) else (None, None)
    if not isinstance(seller_id, int) or not isinstance(account_id, str):
        raise OnboardingLinkInvalid("not an onboarding link of ours")
    row = ConnectedAccount.objects.filter(seller_id=seller_id, account_id=account_id).first()
    if row is not None:
        return _of(row)
    if account_id == _sandbox_account(seller_id):
        return Onboarding(
            seller_id=seller_id,
            account_id=account_id,
            provider=SANDBOX,
            ready=False,
            charges_enabled=False,
            payouts_enabled=False,
            details_submitted=False,
        )
    raise OnboardingLinkInvalid("no such onboarding")


def _sandbox_account(seller_id: int) -> str:
    return f"acct_sbx{seller_id:012d}"


def onboarding_get(*, seller_id: int) -> Onboarding | None:
    row = ConnectedAccount.objects.filter(seller_id=seller_id).first()
    return _of(row) if row else None


def onboarding_start(*, seller_id: int) -> str:
    """The URL to send the seller to (one connected account per seller, created on first use)."""
    if settings.PAYMENTS_PROVIDER == "sandbox":
        return _absolute("web:checkout:onboarding-sandbox", _token(seller_id, _sandbox_account(seller_id)))
    from apps.payments.providers import stripe_checkout

    row = ConnectedAccount.objects.filter(seller_id=seller_id).first()
    try:
        if row is None:
            # Outside any transaction; the key makes a retry (or a concurrent click) the same account.
            account = stripe_checkout.account_create(
                seller_id=seller_id, idempotency_key=f"connect-account-{seller_id}"
            )
            row, _ = ConnectedAccount.objects.get_or_create(
                seller_id=seller_id, defaults={"provider": "stripe", "account_id": account["id"]}
            )
        token = _token(seller_id, row.account_id)
        return stripe_checkout.account_link_create(
            account_id=row.account_id,
            refresh_url=_absolute("web:checkout:onboarding-refresh", token),
            return_url=_absolute("web:checkout:onboarding-return", token),
        )
    except ProviderError as exc:
        raise OnboardingUnavailable("Stripe could not be reached; try again in a minute") from exc


def onboarding_refresh(token: str) -> str:
    """Stripe sends the seller to the refresh page when their Account Link expired: a fresh one."""
    found = onboarding_link_read(token)
    if found.provider == SANDBOX:
        return _absolute("web:checkout:onboarding-sandbox", token)
    return onboarding_start(seller_id=found.seller_id)


def _make_destination(seller_id: int, account_id: str) -> None:
    """Inside the caller's transaction: the ready account is where this seller is paid by card; the
    payouts parked for a missing destination go out once this commits (with their original keys)."""
    row, _ = PayoutDestination.objects.select_for_update().get_or_create(seller_id=seller_id)
    if row.stripe_account_id != account_id:
        row.stripe_account_id = account_id
        row.save()
    if WaitingPayout.objects.filter(seller_id=seller_id, status=WaitingPayout.Status.WAITING).exists():
        transaction.on_commit(lambda: payouts.waiting_payouts_send(seller_id=seller_id), robust=True)


def sandbox_onboarding_complete(token: str) -> Onboarding:
    found = onboarding_link_read(token)
    if found.provider != SANDBOX or settings.PAYMENTS_PROVIDER != "sandbox":
        raise OnboardingLinkInvalid("not a sandbox onboarding")
    with transaction.atomic():
        row, _ = ConnectedAccount.objects.select_for_update().update_or_create(
            seller_id=found.seller_id,
            defaults={
                "provider": SANDBOX,
                "account_id": found.account_id,
                "charges_enabled": True,
                "payouts_enabled": True,
                "details_submitted": True,
                "transfers_active": True,
            },
        )
        _make_destination(found.seller_id, found.account_id)
    return _of(row)


def on_account_updated(record: Any, event: Any) -> bool:
    """account.updated, re-read from Stripe: the account's readiness is recorded; once it can receive
    transfers it becomes the seller's destination (a later loss of readiness is recorded, and Stripe
    itself then refuses transfers, which go to ops as TransferFailed)."""
    obj = event.object
    if not isinstance(obj.get("id"), str):
        return False
    row = (
        ConnectedAccount.objects.select_for_update().filter(account_id=obj.get("id"), provider=record.provider).first()
    )
    if row is None:
        return False
    capabilities = obj.get("capabilities") or {}
    row.charges_enabled = bool(obj.get("charges_enabled"))
    row.payouts_enabled = bool(obj.get("payouts_enabled"))
    row.details_submitted = bool(obj.get("details_submitted"))
    row.transfers_active = isinstance(capabilities, dict) and capabilities.get("transfers") == "active"
    row.save()
    if row.ready:
        _make_destination(row.seller_id, row.account_id)
    return True


# --- what a seller whose payout waits is told ------------------------------------------------------------


@dataclass(frozen=True)
class PayoutStatus:
    """The escrow's payout as its seller should see it (the deal page, the DM)."""

    # waiting_for_destination | sending | sent | on_hold (screening review) | cancelled (refunded instead)
    status: str
    rail: str  # card | usdc
    seller_id: int
    amount_minor: int
    currency: str
    message: str  # in words, with what to do
    fix_url: str  # the payout settings page, when the seller has something to do


PAYOUT_SETTINGS_NAMES = ("web:payout-settings", "web:payouts", "web:settings-payouts")


def payout_settings_url() -> str:
    """The web app's payout settings page (absolute: DMs carry it)."""
    from django.urls import NoReverseMatch

    for name in PAYOUT_SETTINGS_NAMES:
        try:
            return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{reverse(name)}"
        except NoReverseMatch:
            continue
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/settings/payouts"


def payout_waiting_words(*, rail: str, amount: str) -> str:
    where = "a payout account (Stripe)" if rail == "card" else "a USDC wallet address on Base"
    return (
        f"Your payout of {amount} is waiting: you have not added {where} yet. Add it in your payout settings "
        f"and it is sent at once: {payout_settings_url()}"
    )


def payout_status(escrow_id: str) -> PayoutStatus | None:
    """The latest payout of the escrow, or None when none was attempted without going out at once."""
    row = WaitingPayout.objects.filter(escrow_id=escrow_id).order_by("-pk").first()
    if row is None:
        return None
    rail = "usdc" if row.provider == "custodian" else "card"
    amount = f"{row.amount_minor // 100:,}.{row.amount_minor % 100:02d} {row.currency}"
    status, message, fix_url = {
        WaitingPayout.Status.WAITING: (
            "waiting_for_destination",
            payout_waiting_words(rail=rail, amount=amount),
            payout_settings_url(),
        ),
        WaitingPayout.Status.SENDING: ("sending", f"Your payout of {amount} is being sent.", ""),
        WaitingPayout.Status.SENT: ("sent", f"Your payout of {amount} was sent.", ""),
        WaitingPayout.Status.BLOCKED: (
            "on_hold",
            f"Your payout of {amount} is on hold while our compliance team reviews the wallet.",
            "",
        ),
        WaitingPayout.Status.CANCELLED: ("cancelled", "The buyer was refunded instead; nothing is paid out.", ""),
    }[WaitingPayout.Status(row.status)]
    return PayoutStatus(
        status=status,
        rail=rail,
        seller_id=row.seller_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
        message=message,
        fix_url=fix_url,
    )


WEBHOOK_HANDLERS = {"account.updated": on_account_updated}
