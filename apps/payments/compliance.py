"""Wallet screening before money moves on a rail that screens (`PaymentProvider.screens_wallets`: USDC on
Base): a deposit's sender before it is counted, the seller's wallet before a payout, the buyer's wallet
before a refund. Every vendor is asked (outside any transaction; providers/screening.py) and must allow,
and each answer is kept as it comes, with its raw response, whatever the outcome (`WalletScreening`, the
compliance record of what each vendor said, and when). A vendor that cannot answer raises a transient
`ProviderError`: nothing moves, and the caller is retried."""

from __future__ import annotations

import logging

from apps.payments.models import WalletScreening
from apps.payments.providers import screening
from apps.payments.providers.screening import ScreeningBlocked, ScreeningResult

log = logging.getLogger(__name__)


def wallet_screen(*, address: str, purpose: str, escrow_id: str, chain: str) -> ScreeningResult:
    verdicts = []
    for screener in screening.SCREENERS:
        verdict = screener.screen(address=address, chain=chain)
        WalletScreening.objects.create(
            escrow_id=escrow_id,
            address=address,
            chain=chain,
            purpose=purpose,
            vendor=verdict.vendor,
            allowed=verdict.allowed,
            reason=verdict.reason[:1000],
            raw=verdict.raw,
        )
        verdicts.append(verdict)
    result = screening.screening_result(address=address, verdicts=verdicts)
    if not result.allowed:
        log.warning("wallet blocked by screening", extra={"escrow_id": escrow_id, "purpose": purpose})
    return result


def wallet_clear(*, address: str, purpose: str, escrow_id: str, chain: str) -> None:
    """Screens a wallet money is about to be sent to; raises ScreeningBlocked (a permanent refusal of this
    command, announced as WalletScreened) when a vendor blocks it."""
    result = wallet_screen(address=address, purpose=purpose, escrow_id=escrow_id, chain=chain)
    if not result.allowed:
        raise ScreeningBlocked(address=address, reason=result.reason)
