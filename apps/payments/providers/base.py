"""The interface every payment provider implements (sandbox, Stripe, a USDC custodian).

Providers are adapters: they speak to the provider and answer in these types, nothing else. They read no
table and record nothing: what a call needs from our records is passed in (where a seller is paid, which
webhook objects are ours), and payments records the answers (apps/payments/movements.py).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class PaymentSetup:
    """What the buyer needs to pay: a card client secret, or a deposit address."""

    provider_payment_id: str
    client_secret: str = ""
    deposit_address: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MoneyMovement:
    """A transfer or refund the provider accepted. Its outcome arrives later, by webhook."""

    provider_id: str
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook, as the provider sent it (Stripe's event shape: id, type, data.object)."""

    id: str
    type: str
    object: dict[str, Any]
    raw: dict[str, Any]


@dataclass(frozen=True)
class KnownObject:
    """One of our objects at a provider, as payments recorded it: what a provider needs to know before it
    re-reads a webhook's object (it makes no call on a stranger's behalf)."""

    kind: str  # payment | transfer | refund | checkout_session | connected_account
    escrow_id: str = ""


# Looks a provider object id up in payments' records: ours, or None.
KnownObjects = Callable[[str], KnownObject | None]


class WebhookVerificationError(Exception):
    """Signature missing, forged, stale, or signed with another secret."""


class ProviderError(Exception):
    """The provider refused or could not be reached; `transient` errors are retried."""

    def __init__(self, message: str, *, transient: bool, code: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        # The provider's own error code when it gave one (e.g. Stripe's `balance_insufficient`).
        self.code = code


class DestinationRefused(Exception):
    """The provider says a seller's payout destination cannot be paid. `status` is the HTTP answer the
    registration gets: 400 unknown, 409 exists but cannot receive money yet, 503 the provider could not be
    asked (try again)."""

    def __init__(self, detail: str, *, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class PaymentProvider(abc.ABC):
    name: str
    # Which of a seller's registered payout destinations this provider pays to ("stripe_account" or
    # "wallet"); see `unregistered_destination` for a provider that needs none.
    destination_kind: ClassVar[str] = ""
    # Whether money this provider moves is screened first (wallets on a chain: deposits, payouts and
    # refunds), and on which chain.
    screens_wallets: ClassVar[bool] = False
    screening_chain: ClassVar[str] = ""

    @abc.abstractmethod
    def create_payment(
        self, *, escrow_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> PaymentSetup: ...

    @abc.abstractmethod
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
        """Pays the seller at `destination` (a connected account or a wallet, as `destination_kind` says)."""

    def unregistered_destination(self, *, seller_id: int) -> str | None:
        """Where to pay a seller who registered no destination: None (the payout waits for one) for a real
        provider; the sandbox pays a simulated account."""
        return None

    def refund_destination(self, *, escrow_id: str, payment_id: str) -> str:
        """Where a refund of this payment goes, when the provider does not simply reverse the payment
        (a USDC refund goes back to the wallet that paid). "" when the refund needs no destination."""
        return ""

    @abc.abstractmethod
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
        """Refunds the buyer (`destination` is `refund_destination`'s answer)."""

    @abc.abstractmethod
    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> ProviderEvent: ...

    def refresh_event(self, event: ProviderEvent, *, known: KnownObjects) -> ProviderEvent:
        """Re-reads, outside any transaction, the objects whose current state matters more than the
        webhook's snapshot (webhooks arrive late and out of order); `known` says which objects are ours.
        The default trusts the event."""
        return event

    def after_commit(self, *, kind: str, movement: MoneyMovement) -> None:  # noqa: B027 - optional hook
        """Called once the artifact for a new provider object is committed. Real providers answer by
        webhook on their own; the sandbox uses this to send its webhook."""
