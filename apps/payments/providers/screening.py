"""Wallet screening: TRM Labs and Chainalysis, both must pass, and an outage fails closed.

- TRM Labs `POST /public/v2/screening/addresses` (HTTP Basic, the API key as user name): the address is
  blocked when any address risk indicator or any entity is rated High or Severe (riskScoreLevel >= 10).
- Chainalysis sanctions API `GET /api/v1/address/{address}` (header `X-API-Key`): any identification
  blocks.

These are the vendors' clients: each answers a `VendorVerdict` with its raw response, and payments keeps
every answer as it comes (`apps/payments/compliance.py`, `WalletScreening`). A 429, a 5xx, a timeout
(SCREENING_TIMEOUT_SECONDS) or an unreadable answer raises a transient `ProviderError`: the caller moves no
money and is retried (bus backoff, or the custodian's webhook retry). A 429 or 503 with a short Retry-After
is waited out and asked once more first (http.py). Other vendors can be added as another `Screener`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from apps.payments.providers.base import ProviderError
from apps.payments.providers.http import retry_after_seconds, send_honouring_retry_after

DEFAULT_TIMEOUT_SECONDS = 10.0
TRM_BLOCKING_LEVEL = 10  # TRM levels: 1 Low, 5 Medium, 10 High, 15 Severe


@dataclass(frozen=True)
class VendorVerdict:
    vendor: str
    allowed: bool
    reason: str
    raw: Any


@dataclass(frozen=True)
class ScreeningResult:
    address: str
    allowed: bool
    reason: str
    verdicts: tuple[VendorVerdict, ...]


class ScreeningBlocked(ProviderError):
    """A wallet failed screening: permanent for this command, and announced as WalletScreened."""

    def __init__(self, *, address: str, reason: str) -> None:
        # No address in the message: it travels in events (TransferFailed, WalletScreened); the address is
        # kept on the exception and in payments' screening record.
        super().__init__(f"screening blocked the wallet: {reason}", transient=False)
        self.address = address
        self.reason = reason


class Screener(abc.ABC):
    vendor: str

    @abc.abstractmethod
    def screen(self, *, address: str, chain: str) -> VendorVerdict: ...


def _answer(vendor: str, response: requests.Response) -> Any:
    if response.status_code == 429 or response.status_code >= 500:
        wait = retry_after_seconds(response)
        later = f" (retry after {wait:g} s)" if wait is not None else ""
        raise ProviderError(
            f"{vendor} screening unavailable: HTTP {response.status_code}{later} {response.text[:200]}".strip(),
            transient=True,
        )
    if response.status_code >= 400:
        # Our request or our credentials are wrong: still no money moves; retried once fixed.
        raise ProviderError(
            f"{vendor} screening refused: HTTP {response.status_code} {response.text[:200]}", transient=True
        )
    try:
        return response.json()
    except ValueError:
        raise ProviderError(f"{vendor} screening answer is not JSON", transient=True) from None


def _get(vendor: str, method: str, url: str, **kwargs: Any) -> Any:
    timeout = float(getattr(settings, "SCREENING_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))
    try:
        response = send_honouring_retry_after(vendor, lambda: requests.request(method, url, timeout=timeout, **kwargs))
    except requests.RequestException as exc:
        raise ProviderError(f"{vendor} screening unreachable: {type(exc).__name__}", transient=True) from exc
    return _answer(vendor, response)


class TrmScreener(Screener):
    vendor = "trm"

    def screen(self, *, address: str, chain: str) -> VendorVerdict:
        raw = _get(
            self.vendor,
            "POST",
            f"{settings.TRM_API_BASE.rstrip('/')}/public/v2/screening/addresses",
            json=[{"address": address, "chain": chain}],
            auth=(settings.TRM_API_KEY, settings.TRM_API_KEY),
        )
        if not isinstance(raw, list) or len(raw) != 1 or not isinstance(raw[0], dict):
            raise ProviderError("trm screening answer has an unexpected shape", transient=True)
        found = raw[0]
        reasons = [
            f"{item.get('category')} ({item.get('riskType', 'entity')}, {item.get('categoryRiskScoreLevelLabel') or item.get('riskScoreLevelLabel')})"
            for item in [*(found.get("addressRiskIndicators") or []), *(found.get("entities") or [])]
            if isinstance(item, dict)
            and max(_int(item.get("categoryRiskScoreLevel")), _int(item.get("riskScoreLevel"))) >= TRM_BLOCKING_LEVEL
        ]
        return VendorVerdict(self.vendor, not reasons, "; ".join(reasons), raw)


class ChainalysisScreener(Screener):
    vendor = "chainalysis"

    def screen(self, *, address: str, chain: str) -> VendorVerdict:
        raw = _get(
            self.vendor,
            "GET",
            f"{settings.CHAINALYSIS_API_BASE.rstrip('/')}/api/v1/address/{address}",
            headers={"X-API-Key": settings.CHAINALYSIS_API_KEY, "Accept": "application/json"},
        )
        identifications = raw.get("identifications") if isinstance(raw, dict) else None
        if not isinstance(identifications, list):
            raise ProviderError("chainalysis answer lacks identifications", transient=True)
        reasons = [f"{i.get('category')}: {i.get('name')}" for i in identifications if isinstance(i, dict)]
        return VendorVerdict(self.vendor, not identifications, "; ".join(reasons) or "", raw)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


SCREENERS: tuple[Screener, ...] = (TrmScreener(), ChainalysisScreener())


def screening_result(*, address: str, verdicts: list[VendorVerdict]) -> ScreeningResult:
    """Every vendor's answer about `address`, combined: all must allow."""
    blocked = [f"{v.vendor}: {v.reason}" for v in verdicts if not v.allowed]
    return ScreeningResult(
        address=address, allowed=not blocked, reason="; ".join(blocked)[:1000], verdicts=tuple(verdicts)
    )
