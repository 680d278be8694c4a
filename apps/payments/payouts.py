"""Where sellers are paid, and payouts that wait for a destination.

A seller registers a Stripe connected account (card escrows) or a USDC wallet on Base (custodian
escrows). If a release reaches payments before the seller has one, the transfer is not lost and not
dropped: it is parked as a `WaitingPayout` (the escrow stays RELEASING, held, flagged for ops by a
TransferFailed), and registering a destination sends it with the command's original idempotency key.
If screening then blocks the seller's wallet, nothing is sent: the payout is held (`blocked`) and the
escrow goes on compliance hold, as a block at release does; ops lift it or refund the buyer.

Every transfer to a seller goes out through `transfer_send`: the destination is looked up here and passed
to the provider, and a rail that screens wallets has the seller's screened first. What went out (or did
not) is recorded by movements.py.
"""

from __future__ import annotations

import datetime
import logging
import re
import uuid
from dataclasses import dataclass

from Crypto.Hash import keccak
from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from apps.payments import compliance, movements, providers, services
from apps.payments.models import PaymentArtifact, PayoutDestination, WaitingPayout, WalletScreening
from apps.payments.providers.base import DestinationRefused, MoneyMovement, ProviderError
from apps.payments.providers.screening import ScreeningBlocked

log = logging.getLogger(__name__)

# Stripe account ids are "acct_" and an opaque alphanumeric tail (16 characters today).
STRIPE_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]{8,64}$")
EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
ZERO_ADDRESS = "0x" + "0" * 40


class PayoutDestinationMissing(Exception):
    """The seller has not registered where to be paid for this rail."""


class InvalidPayoutDestination(ValueError):
    """`status` is the HTTP answer: 400 malformed or unknown, 409 exists but cannot be paid yet, 503 the
    provider could not be asked (try again)."""

    def __init__(self, field: str, detail: str, *, status: int = 400) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Destination:
    seller_id: int
    stripe_account_id: str
    wallet_address: str


def _of(row: PayoutDestination) -> Destination:
    return Destination(
        seller_id=row.seller_id, stripe_account_id=row.stripe_account_id, wallet_address=row.wallet_address
    )


def validate_stripe_account(value: str) -> str:
    if not STRIPE_ACCOUNT.match(value):
        raise InvalidPayoutDestination(
            "stripe_account_id", "must be a Stripe connected account id such as acct_1Nv0FGQ9RKHgCVdK"
        )
    return value


def eip55_checksum(address: str) -> str:
    """The EIP-55 spelling of a 0x address: a hex letter is upper-case where the matching nibble of
    keccak256(lower-case hex) is 8 or more."""
    digits = address[2:].lower()
    digest = keccak.new(digest_bits=256, data=digits.encode("ascii")).hexdigest()
    return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(digits, digest[:40], strict=True))


def validate_wallet(value: str) -> str:
    """A 20-byte EVM address on Base, stored lower-case. Mixed case carries an EIP-55 checksum, which must
    match: a typo in a payout address would send the seller's money somewhere nobody can return it from.
    All-lower (or all-upper) input has no checksum to check and is accepted."""
    if not EVM_ADDRESS.match(value):
        raise InvalidPayoutDestination("wallet_address", "must be a 0x-prefixed 40-hex-digit address on Base")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and value != eip55_checksum(value):
        raise InvalidPayoutDestination(
            "wallet_address",
            "the EIP-55 checksum (its mixed case) does not match: copy the address again from the wallet",
        )
    if value.lower() == ZERO_ADDRESS:
        raise InvalidPayoutDestination("wallet_address", "the zero address burns funds")
    return value.lower()


def destination_get(*, seller_id: int) -> Destination | None:
    row = PayoutDestination.objects.filter(seller_id=seller_id).first()
    return _of(row) if row else None


def destination_set(*, seller_id: int, stripe_account_id: str | None, wallet_address: str | None) -> Destination:
    """Registers (or replaces) the seller's destinations; None leaves a field as it was. Payouts that were
    waiting for this seller are sent once this commits."""
    stripe_value = validate_stripe_account(stripe_account_id) if stripe_account_id is not None else None
    wallet_value = validate_wallet(wallet_address) if wallet_address is not None else None
    if stripe_value is not None and settings.PAYMENTS_PROVIDER == "live":
        # Asked before anything is stored (and outside the transaction): a release must not be parked
        # behind an account that does not exist or cannot receive transfers.
        try:
            providers.get("stripe").verify_connected_account(account_id=stripe_value)  # type: ignore[attr-defined]
        except DestinationRefused as exc:
            raise InvalidPayoutDestination("stripe_account_id", exc.detail, status=exc.status) from None
    with transaction.atomic():
        row, _ = PayoutDestination.objects.select_for_update().get_or_create(seller_id=seller_id)
        if stripe_value is not None:
            row.stripe_account_id = stripe_value
        if wallet_value is not None:
            row.wallet_address = wallet_value
        row.save()
        # Sending calls the provider: never inside our transaction.
        transaction.on_commit(lambda: waiting_payouts_send(seller_id=seller_id), robust=True)
    return _of(row)


def stripe_account_for(seller_id: int) -> str:
    row = PayoutDestination.objects.filter(seller_id=seller_id).exclude(stripe_account_id="").first()
    if row is None:
        raise PayoutDestinationMissing(f"seller {seller_id} has no Stripe connected account")
    return row.stripe_account_id


def wallet_for(seller_id: int) -> str:
    row = PayoutDestination.objects.filter(seller_id=seller_id).exclude(wallet_address="").first()
    if row is None:
        raise PayoutDestinationMissing(f"seller {seller_id} has no USDC wallet on Base")
    return row.wallet_address


REGISTERED_DESTINATIONS = {"stripe_account": stripe_account_for, "wallet": wallet_for}


def destination_for(*, provider_name: str, seller_id: int) -> str:
    """Where this provider pays this seller; PayoutDestinationMissing while they have registered none."""
    provider = providers.get(provider_name)
    simulated = provider.unregistered_destination(seller_id=seller_id)
    if simulated is not None:
        return simulated
    return REGISTERED_DESTINATIONS[provider.destination_kind](seller_id)


def transfer_send(
    *,
    provider_name: str,
    escrow_id: str,
    seller_id: int,
    amount_minor: int,
    currency: str,
    source_payment_id: str,
    idempotency_key: str,
) -> MoneyMovement:
    """Calls the provider (outside any transaction) to pay the seller at their destination, screened first
    on a rail that screens wallets. Raises PayoutDestinationMissing, ScreeningBlocked or ProviderError
    when nothing was sent."""
    provider = providers.get(provider_name)
    destination = destination_for(provider_name=provider_name, seller_id=seller_id)
    if provider.screens_wallets:
        compliance.wallet_clear(
            address=destination, purpose="payout", escrow_id=escrow_id, chain=provider.screening_chain
        )
    return provider.create_transfer(
        escrow_id=escrow_id,
        destination=destination,
        amount_minor=amount_minor,
        currency=currency,
        source_payment_id=source_payment_id,
        idempotency_key=idempotency_key,
    )


# A claim older than this is taken to be from a sender that died mid-call; the payout is sent again
# with the same idempotency key, which the provider answers with the first transfer.
STALE_CLAIM = datetime.timedelta(minutes=10)


def _claim(payout: WaitingPayout) -> bool:
    """WAITING (or a stale SENDING) -> SENDING in one conditional UPDATE: a refund that cancels parked
    payouts uses the same kind of UPDATE, so for one row exactly one of them wins."""
    stale = timezone.now() - STALE_CLAIM
    claimable = WaitingPayout.objects.filter(pk=payout.pk, status=WaitingPayout.Status.WAITING) | (
        WaitingPayout.objects.filter(pk=payout.pk, status=WaitingPayout.Status.SENDING, updated_at__lt=stale)
    )
    return bool(claimable.update(status=WaitingPayout.Status.SENDING, updated_at=timezone.now()))


def _unclaim(payout: WaitingPayout, error: str = "") -> None:
    WaitingPayout.objects.filter(pk=payout.pk, status=WaitingPayout.Status.SENDING).update(
        status=WaitingPayout.Status.WAITING, last_error=error[:1000], updated_at=timezone.now()
    )


def _not_sent(payout: WaitingPayout, error: ProviderError) -> None:
    """The provider refused or could not be reached for this claimed payout (after a compliance lift, a
    seller's registration or a retry): the escrow goes in front of ops again (TransferFailed, attention
    transfer_failed), since nothing else would show it. A transient failure leaves the payout waiting, for
    `send_waiting_payouts`; a permanent one cancels it (the same key would only get the same refusal, and
    ops' retry sends a new command, so the old row must never go out too)."""
    reason = f"waiting payout not sent: {error}"[:1000]
    status = WaitingPayout.Status.WAITING if error.transient else WaitingPayout.Status.CANCELLED
    with transaction.atomic():
        order = services.lock_order(str(payout.escrow_id))
        changed = WaitingPayout.objects.filter(pk=payout.pk, status=WaitingPayout.Status.SENDING).update(
            status=status, last_error=reason, updated_at=timezone.now()
        )
        if not changed or order is None:
            return
        movements.transfer_failed(
            order,
            amount_minor=payout.amount_minor,
            currency=payout.currency,
            provider=payout.provider,
            reason=reason,
            fact=f"{payout.provider}:{payout.idempotency_key}:resend_failed:{uuid.uuid4()}",
        )


def _hold_for_review(payout: WaitingPayout, blocked: ProviderError) -> None:
    """Screening blocked the wallet this claimed payout was to go to: nothing was sent. The payout is held
    (`blocked`: no sender claims it, so a wallet registered later cannot take it past the review), and the
    block is announced as one at release is (TransferFailed, then WalletScreened(allowed=false), which puts
    the escrow on compliance hold). The vendors' answers are already kept (WalletScreening, with raw)."""
    address = str(getattr(blocked, "address", ""))
    # One announcement per screening that blocked (a payout blocked again after a lift is a new hold).
    verdict = (
        WalletScreening.objects.filter(escrow_id=payout.escrow_id, address=address, allowed=False)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    fact = f"{payout.idempotency_key}:parked:{verdict}"
    reason = str(blocked)[:1000]
    with transaction.atomic():
        order = services.lock_order(str(payout.escrow_id))
        held = WaitingPayout.objects.filter(pk=payout.pk, status=WaitingPayout.Status.SENDING).update(
            # The wallet is named here, in payments' own record, never in the messages below.
            status=WaitingPayout.Status.BLOCKED,
            last_error=f"{address}: {reason}"[:1000],
            updated_at=timezone.now(),
        )
        if not held or order is None:
            return
        movements.transfer_failed(
            order,
            amount_minor=payout.amount_minor,
            currency=payout.currency,
            provider=payout.provider,
            reason=reason,
            fact=f"{payout.provider}:{fact}:not_sent",
        )
        movements.announce_block(order, reason=reason, key=fact)
    log.warning("waiting payout blocked by screening", extra={"escrow_id": str(payout.escrow_id)})


def waiting_payouts_send(*, seller_id: int | None = None, escrow_id: str | None = None) -> int:
    """Sends the waiting payouts (of one seller, one escrow, or all): each row is claimed first, then the
    provider is called outside any transaction with the original key, then the artifact and the row's
    status are recorded in one transaction. A payout whose seller still lacks a destination, or whose
    provider call fails, goes back to waiting; one whose wallet screening blocks is held for compliance
    review. Returns how many went out."""
    waiting = WaitingPayout.objects.filter(
        status__in=[WaitingPayout.Status.WAITING, WaitingPayout.Status.SENDING]
    ).order_by("id")
    if seller_id is not None:
        waiting = waiting.filter(seller_id=seller_id)
    if escrow_id is not None:
        waiting = waiting.filter(escrow_id=escrow_id)
    sent = 0
    for payout in list(waiting):
        if not _claim(payout):
            continue
        try:
            movement = transfer_send(
                provider_name=payout.provider,
                escrow_id=str(payout.escrow_id),
                seller_id=payout.seller_id,
                amount_minor=payout.amount_minor,
                currency=payout.currency,
                source_payment_id=payout.source_payment_id,
                idempotency_key=payout.idempotency_key,
            )
        except PayoutDestinationMissing:
            _unclaim(payout)
            continue
        except ScreeningBlocked as exc:
            _hold_for_review(payout, exc)
            continue
        except ProviderError as exc:
            _not_sent(payout, exc)
            log.warning("waiting payout not sent", extra={"escrow_id": str(payout.escrow_id), "error": str(exc)})
            continue
        except BaseException:
            _unclaim(payout, "sender failed")
            raise
        with transaction.atomic():
            locked = WaitingPayout.objects.select_for_update().get(pk=payout.pk)
            movements.record_movement(
                escrow_id=str(payout.escrow_id),
                kind="transfer",
                provider_name=payout.provider,
                movement=movement,
                key=payout.idempotency_key,
                amount_minor=payout.amount_minor,
                fee_minor=payout.fee_minor,
                currency=payout.currency,
            )
            locked.status = WaitingPayout.Status.SENT
            locked.last_error = ""
            locked.save(update_fields=["status", "last_error", "updated_at"])
        sent += 1
    return sent


def _sum(queryset: object, expression: object) -> int:
    return queryset.aggregate(total=Sum(expression))["total"] or 0  # type: ignore[attr-defined]


def refund_budget_check(*, escrow_id: str, refund_minor: int) -> str:
    """Called before a refund leaves. Payments never sends more out of an escrow than came in: if this
    refund plus what was sent, is pending or is parked for the seller would exceed what the escrow
    received, the parked payouts are cancelled first (the escrow decided to give the money back, e.g.
    after a compliance review). Returns a reason to refuse the refund if it would still exceed it
    (a payout is already out or being sent), or "" when it may go."""
    payouts = WaitingPayout.objects.filter(escrow_id=escrow_id)
    # Parked: waiting for a destination, or held because screening blocked the seller's wallet.
    parked_statuses = [WaitingPayout.Status.WAITING, WaitingPayout.Status.BLOCKED]
    if not payouts.filter(status__in=[*parked_statuses, WaitingPayout.Status.SENDING]).exists():
        # Nothing parked or being sent: nothing this refund could race. (Artifacts record what was asked
        # of the buyer, not an overpayment that arrived, so they cannot bound an ordinary refund.)
        return ""
    artifacts = PaymentArtifact.objects.filter(escrow_id=escrow_id)
    live = [PaymentArtifact.Status.PENDING, PaymentArtifact.Status.SUCCEEDED]
    received = _sum(
        artifacts.filter(kind=PaymentArtifact.Kind.PAYMENT, status=PaymentArtifact.Status.SUCCEEDED), "amount_minor"
    )
    committed = _sum(
        artifacts.filter(kind=PaymentArtifact.Kind.TRANSFER, status__in=live), F("amount_minor") + F("fee_minor")
    ) + _sum(artifacts.filter(kind=PaymentArtifact.Kind.REFUND, status__in=live), "amount_minor")
    parked = _sum(payouts.filter(status__in=parked_statuses), F("amount_minor") + F("fee_minor"))
    sending = _sum(payouts.filter(status=WaitingPayout.Status.SENDING), F("amount_minor") + F("fee_minor"))
    if committed + parked + sending + refund_minor <= received:
        return ""
    cancelled = payouts.filter(status__in=parked_statuses).update(
        status=WaitingPayout.Status.CANCELLED, last_error="superseded by a refund", updated_at=timezone.now()
    )
    if cancelled:
        log.warning("parked payouts cancelled by a refund", extra={"escrow_id": escrow_id, "cancelled": cancelled})
    sending = _sum(payouts.filter(status=WaitingPayout.Status.SENDING), F("amount_minor") + F("fee_minor"))
    if committed + sending + refund_minor > received:
        return (
            f"refund of {refund_minor} would exceed what the escrow received ({received}); "
            f"{committed + sending} is already paid out, refunded or being sent"
        )
    return ""


def waiting_payouts_count(*, seller_id: int) -> int:
    return WaitingPayout.objects.filter(seller_id=seller_id, status=WaitingPayout.Status.WAITING).count()
