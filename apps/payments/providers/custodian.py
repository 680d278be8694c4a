"""USDC on Base through a custodian, for escrows above STRIPE_MAX_AMOUNT_MINOR. The client speaks the shape of
Circle's developer-controlled wallets API; another custodian (Fireblocks, BitGo) is another
`PaymentProvider` (see docs/payments.md for the differences).

- CreatePaymentIntent: one wallet per escrow on BASE; its address is the buyer's deposit address.
- TransferToSeller / InitiateRefund: a transfer of USDC out of the escrow's wallet, to the seller's
  registered wallet / back to the wallet the buyer paid from (`refund_destination`). Payments screens each
  wallet first (`screens_wallets`; apps/payments/compliance.py), deposits' senders included.
- Every POST carries `idempotencyKey`: a UUIDv4 derived from our command's key, so our retries are one
  operation at the custodian.
- Webhooks (`transactions.inbound` / `transactions.outbound`) are ECDSA-SHA256 signatures over the raw body
  (`X-Circle-Signature`, base64 DER), checked with the public key named by `X-Circle-Key-Id` (fetched from
  the custodian, or pinned in CUSTODIAN_WEBHOOK_SECRET as base64 DER). The transaction is then re-read and
  named in our terms (payment_intent.succeeded with the sender's address, transfer.created, ...) for the
  shared webhook handlers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from django.conf import settings

from apps.payments.providers.base import (
    KnownObjects,
    MoneyMovement,
    PaymentProvider,
    PaymentSetup,
    ProviderError,
    ProviderEvent,
    WebhookVerificationError,
)
from apps.payments.providers.http import retry_after_seconds, send_honouring_retry_after

DEFAULT_TIMEOUT_SECONDS = 15.0
BLOCKCHAIN = "BASE"
CHAIN_FOR_SCREENING = "base"
DONE = "COMPLETE"
FAILED_STATES = frozenset({"FAILED", "CANCELLED", "DENIED"})
# Not the escrow's currency: a deposit of another token is counted by nobody and goes to ops.
UNKNOWN_TOKEN_CURRENCY = "XXX"


def idempotency_uuid(key: str) -> str:
    """Circle wants a UUIDv4 idempotency key: ours, hashed into one (same command, same UUID)."""
    return str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4))


def usdc_amount(amount_minor: int) -> str:
    whole, cents = divmod(amount_minor, 100)
    return f"{whole}.{cents:02d}"


def minor_of(amount: Any) -> int | None:
    """USDC decimal string -> cents, rounding sub-cent dust down (dust stays in the wallet)."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_DOWN))


def _request(
    method: str, path: str, *, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """One call (CUSTODIAN_TIMEOUT_SECONDS). A POST body gets a fresh entity-secret ciphertext on every
    attempt, including the one after a Retry-After wait; its idempotencyKey stays the same."""
    url = f"{settings.CUSTODIAN_API_BASE.rstrip('/')}{path}"
    timeout = float(getattr(settings, "CUSTODIAN_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))

    def send() -> requests.Response:
        return requests.request(
            method,
            url,
            json=_with_secret(body) if body is not None else None,
            params=params,
            timeout=timeout,
            headers={"Authorization": f"Bearer {settings.CUSTODIAN_API_KEY}"},
        )

    try:
        response = send_honouring_retry_after("custodian", send)
    except requests.RequestException as exc:
        raise ProviderError(f"custodian {method} {path}: {type(exc).__name__}", transient=True) from exc
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code >= 400:
        message = (
            f"custodian {method} {path}: {response.status_code} {answer.get('code', '')} {answer.get('message', '')}"
        )
        wait = retry_after_seconds(response)
        if wait is not None:
            message += f" (retry after {wait:g} s)"
        transient = response.status_code in (401, 403, 409, 429) or response.status_code >= 500
        raise ProviderError(message.strip()[:1000], transient=transient)
    data = answer.get("data")
    if not isinstance(data, dict):
        raise ProviderError(f"custodian {method} {path}: answer without data", transient=True)
    return data


_entity_keys: dict[str, rsa.RSAPublicKey] = {}


def _entity_public_key() -> rsa.RSAPublicKey:
    """The custodian's RSA key for entity secrets, fetched once per API base (it changes only when the
    entity is re-registered; a wrong key is answered 4xx and the next process start fetches it again)."""
    base = settings.CUSTODIAN_API_BASE
    if base not in _entity_keys:
        pem = str(_request("GET", "/v1/w3s/config/entity/publicKey").get("publicKey") or "")
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError:
            raise ProviderError("custodian entity public key is not a PEM public key", transient=True) from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise ProviderError("custodian entity public key is not an RSA key", transient=True)
        _entity_keys[base] = key
    return _entity_keys[base]


def entity_secret_ciphertext() -> str:
    """RSA-OAEP(SHA-256) of the entity secret, base64. OAEP is randomised, so every request carries a new
    ciphertext, as Circle requires (a replayed ciphertext is refused)."""
    try:
        secret = bytes.fromhex(settings.CUSTODIAN_ENTITY_SECRET)
    except ValueError:
        # Say what is wrong without echoing any of the secret.
        raise ProviderError("CUSTODIAN_ENTITY_SECRET is not hex", transient=True) from None
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return base64.b64encode(_entity_public_key().encrypt(secret, oaep)).decode()


def _with_secret(body: dict[str, Any]) -> dict[str, Any]:
    if not settings.CUSTODIAN_ENTITY_SECRET:
        return body
    return {**body, "entitySecretCiphertext": entity_secret_ciphertext()}


def transaction_get(tx_id: str) -> dict[str, Any]:
    found = _request("GET", f"/v1/w3s/transactions/{tx_id}").get("transaction")
    if not isinstance(found, dict):
        raise ProviderError(f"custodian transaction {tx_id}: no transaction in answer", transient=True)
    return found


_public_keys: dict[str, ec.EllipticCurvePublicKey] = {}


def _public_key(key_id: str) -> ec.EllipticCurvePublicKey:
    pinned = settings.CUSTODIAN_WEBHOOK_SECRET
    if pinned:
        encoded = pinned
    elif key_id in _public_keys:
        return _public_keys[key_id]
    else:
        try:
            encoded = str(_request("GET", f"/v2/notifications/publicKey/{key_id}").get("publicKey") or "")
        except ProviderError as exc:
            if exc.transient:
                raise
            raise WebhookVerificationError(f"unknown signing key {key_id}") from None
    try:
        key = serialization.load_der_public_key(base64.b64decode(encoded))
    except ValueError:
        raise WebhookVerificationError("signing key is not a DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookVerificationError("signing key is not an ECDSA key")
    if not pinned:
        _public_keys[key_id] = key
    return key


class CustodianProvider(PaymentProvider):
    name = "custodian"
    destination_kind = "wallet"
    screens_wallets = True
    screening_chain = CHAIN_FOR_SCREENING

    def create_payment(self, *, escrow_id: str, amount_minor: int, currency: str, idempotency_key: str) -> PaymentSetup:
        if currency != "USD":
            raise ProviderError(f"the USDC rail takes USD escrows, not {currency}", transient=False)
        data = _request(
            "POST",
            "/v1/w3s/developer/wallets",
            body={
                "idempotencyKey": idempotency_uuid(idempotency_key),
                "walletSetId": getattr(settings, "CUSTODIAN_WALLET_SET_ID", ""),
                "blockchains": [BLOCKCHAIN],
                "count": 1,
                "metadata": [{"name": "escrow", "refId": escrow_id}],
            },
        )
        wallets = data.get("wallets") or []
        if len(wallets) != 1 or not wallets[0].get("id") or not wallets[0].get("address"):
            raise ProviderError("custodian created no wallet", transient=True)
        wallet = wallets[0]
        raw = {key: wallet.get(key) for key in ("id", "address", "blockchain", "state")}
        return PaymentSetup(
            provider_payment_id=wallet["id"],
            deposit_address=wallet["address"],
            raw={**raw, "expected": usdc_amount(amount_minor)},
        )

    def _send(
        self,
        *,
        escrow_id: str,
        wallet_id: str,
        destination: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
    ) -> MoneyMovement:
        if currency != "USD":
            raise ProviderError(f"the USDC rail pays USD escrows, not {currency}", transient=False)
        data = _request(
            "POST",
            "/v1/w3s/developer/transactions/transfer",
            body={
                "idempotencyKey": idempotency_uuid(idempotency_key),
                "walletId": wallet_id,
                "destinationAddress": destination,
                "amounts": [usdc_amount(amount_minor)],
                "tokenAddress": getattr(settings, "CUSTODIAN_USDC_TOKEN_ADDRESS", ""),
                "blockchain": BLOCKCHAIN,
                "feeLevel": "MEDIUM",
                "refId": escrow_id,
            },
        )
        if not data.get("id"):
            raise ProviderError("custodian accepted a transfer without an id", transient=True)
        return MoneyMovement(
            provider_id=str(data["id"]), raw={"id": data["id"], "state": data.get("state"), "destination": destination}
        )

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
        return self._send(
            escrow_id=escrow_id,
            wallet_id=source_payment_id,
            destination=destination,
            amount_minor=amount_minor,
            currency=currency,
            idempotency_key=idempotency_key,
        )

    def refund_destination(self, *, escrow_id: str, payment_id: str) -> str:
        """Back to where the money came from: the sender of the escrow wallet's completed deposit."""
        deposits = (
            _request(
                "GET",
                "/v1/w3s/transactions",
                params={
                    "walletIds": payment_id,
                    "txType": "INBOUND",
                    "state": DONE,
                },
            ).get("transactions")
            or []
        )
        senders = {tx.get("sourceAddress") for tx in deposits if isinstance(tx, dict) and tx.get("sourceAddress")}
        if len(senders) != 1:
            raise ProviderError(f"cannot tell where to refund: {len(senders)} sending wallets", transient=False)
        return str(senders.pop())

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
        return self._send(
            escrow_id=escrow_id,
            wallet_id=payment_id,
            destination=destination,
            amount_minor=amount_minor,
            currency=currency,
            idempotency_key=idempotency_key,
        )

    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        signature = headers.get("X-Circle-Signature") or headers.get("x-circle-signature")
        key_id = headers.get("X-Circle-Key-Id") or headers.get("x-circle-key-id")
        if not signature or not key_id:
            raise WebhookVerificationError("missing X-Circle-Signature or X-Circle-Key-Id")
        key = _public_key(key_id)
        try:
            key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise WebhookVerificationError("signature does not match the body") from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookVerificationError("body is not JSON") from None
        notification = payload.get("notification") if isinstance(payload, dict) else None
        if (
            not isinstance(notification, dict)
            or not isinstance(payload.get("notificationId"), str)
            or not isinstance(payload.get("notificationType"), str)
        ):
            raise WebhookVerificationError("notification lacks notificationId, notificationType or notification")
        return ProviderEvent(
            id=payload["notificationId"], type=payload["notificationType"], object=notification, raw=payload
        )

    def refresh_event(self, event: ProviderEvent, *, known: KnownObjects) -> ProviderEvent:
        tx_id = event.object.get("id")
        if not isinstance(tx_id, str):
            return event
        if event.type == "transactions.inbound":
            wallet_id = event.object.get("walletId")
            payment = known(wallet_id) if isinstance(wallet_id, str) else None
            if payment is None or payment.kind != "payment":
                return event  # not one of our deposit wallets: acknowledged, ignored
            tx = transaction_get(tx_id)
            if tx.get("state") != DONE or tx.get("walletId") != wallet_id or tx.get("transactionType") != "INBOUND":
                return ProviderEvent(id=event.id, type="custodian.not_final", object=tx, raw=event.raw)
            amounts = tx.get("amounts") or []
            usdc = (
                tx.get("tokenId") == getattr(settings, "CUSTODIAN_USDC_TOKEN_ID", "")
                and tx.get("blockchain") == BLOCKCHAIN
            )
            obj = {
                "id": wallet_id,
                "object": "payment_intent",
                "status": "succeeded",
                "amount_received": minor_of(amounts[0]) if len(amounts) == 1 else None,
                "currency": "usd" if usdc else UNKNOWN_TOKEN_CURRENCY,
                "transaction": tx_id,
                # Screened by payments before the deposit is counted (a blocked one is `wallet.blocked`).
                "source_address": str(tx.get("sourceAddress") or ""),
            }
            return ProviderEvent(id=event.id, type="payment_intent.succeeded", object=obj, raw=event.raw)
        if event.type == "transactions.outbound":
            artifact = known(tx_id)
            if artifact is None or artifact.kind not in ("transfer", "refund"):
                return event
            tx = transaction_get(tx_id)
            state = tx.get("state")
            if state not in FAILED_STATES and state != DONE:
                return ProviderEvent(id=event.id, type="custodian.not_final", object=tx, raw=event.raw)
            if artifact.kind == "transfer":
                kind = "transfer.created" if state == DONE else "transfer.reversed"
                return ProviderEvent(id=event.id, type=kind, object={"id": tx_id, "object": "transfer"}, raw=event.raw)
            status = "succeeded" if state == DONE else "failed"
            return ProviderEvent(
                id=event.id,
                type="refund.updated",
                object={
                    "id": tx_id,
                    "object": "refund",
                    "status": status,
                    "failure_reason": str(tx.get("errorReason") or state),
                },
                raw=event.raw,
            )
        return event
