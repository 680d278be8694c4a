"""The interface every payment provider implements (sandbox, Stripe, a USDC custodian)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


class WebhookVerificationError(Exception):
    """Signature missing, forged, stale, or signed with another secret."""


class ProviderError(Exception):
    """The provider refused or could not be reached; `transient` errors are retried."""

    def __init__(self, message: str, *, transient: bool, code: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        # The provider's own error code when it gave one (e.g. Stripe's `balance_insufficient`).
        self.code = code


class PaymentProvider(abc.ABC):
    name: str

    @abc.abstractmethod
    def create_payment(
        self, *, escrow_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> PaymentSetup: ...

    @abc.abstractmethod
    def create_transfer(
        self,
        *,
        escrow_id: str,
        seller_id: int,
        amount_minor: int,
        currency: str,
        source_payment_id: str,
        idempotency_key: str,
    ) -> MoneyMovement: ...

    @abc.abstractmethod
    def create_refund(
        self, *, escrow_id: str, payment_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> MoneyMovement: ...

    @abc.abstractmethod
    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> ProviderEvent: ...

    def refresh_event(self, event: ProviderEvent) -> ProviderEvent:
        """Re-reads, outside any transaction, the objects whose current state matters more than the
        webhook's snapshot (webhooks arrive late and out of order). The default trusts the event."""
        return event

    def after_commit(self, *, kind: str, provider_id: str) -> None:  # noqa: B027 - optional hook
        """Called once the artifact for a new provider object is committed. Real providers answer by
        webhook on their own; the sandbox uses this to send its webhook."""
