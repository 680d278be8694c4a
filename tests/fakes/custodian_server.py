"""A local custodian shaped like Circle's developer-controlled wallets API, on pytest-httpserver.

Wallets per escrow on BASE, transfers out of them, transactions to read back, the webhook public key, and
notifications signed the custodian's way (ECDSA P-256 / SHA-256 over the raw body, base64 DER in
X-Circle-Signature, key named by X-Circle-Key-Id). POSTs replay on a repeated idempotencyKey (which must
be a UUID). Like FakeStripe, the next requests under a path can be told to fail (`fail_next`: a status
with Circle's `{"code", "message"}` error body, optionally a Retry-After) or to be slow (`delay_next`: the
request is carried out, then answered only after a delay, so a client with a shorter timeout gives up on
a transfer that was in fact made).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

USDC_TOKEN_ID = "7adb2b7d-c9cd-5164-b2d4-b73b088274dc"
KEY_ID = "7d2f1a9e-0000-4000-8000-00000000c1c1"
# Circle's error bodies are {"code": <int>, "message": <str>}; -1 is its "unknown error" code.
CIRCLE_ERRORS: dict[int, tuple[int, str]] = {
    400: (2, "API parameter invalid"),
    401: (401, "Malformed authorization."),
    403: (3, "Forbidden"),
    404: (4, "Not found"),
    429: (-1, "Too many requests, please retry later."),
    500: (-1, "Something went wrong."),
    502: (-1, "Bad gateway"),
    503: (-1, "Service unavailable"),
}


@dataclass
class Seen:
    method: str
    path: str
    body: dict[str, Any]
    status: int


@dataclass
class FakeCustodian:
    server: HTTPServer
    api_key: str = "TEST_API_KEY:fake:secret"
    wallets: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    signing_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    # When set (hex), every POST must carry entitySecretCiphertext: this secret, RSA-OAEP(SHA-256)
    # encrypted to entity_key's public half, never the same ciphertext twice.
    entity_secret: str = ""
    entity_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ciphertexts: list[str] = field(default_factory=list)
    _replies: dict[str, tuple[dict[str, Any], int, str]] = field(default_factory=dict)
    _failures: deque[tuple[str, int, int, str, str | None]] = field(default_factory=deque)
    _delays: deque[tuple[str, float]] = field(default_factory=deque)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.expect_request(re.compile(r"^/v[12]/.*")).respond_with_handler(self._handle)

    @property
    def api_base(self) -> str:
        return self.server.url_for("").rstrip("/")

    @property
    def public_key_b64(self) -> str:
        der = self.signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        *,
        code: int | None = None,
        message: str | None = None,
        times: int = 1,
        retry_after: str | None = None,
    ) -> None:
        """The next `times` requests under `path_prefix` get `status` and Circle's error body (`code`,
        `message`; defaults per status), with a Retry-After header when given. Nothing is carried out."""
        default_code, default_message = CIRCLE_ERRORS.get(status, (-1, "Something went wrong."))
        for _ in range(times):
            self._failures.append(
                (path_prefix, status, default_code if code is None else code, message or default_message, retry_after)
            )

    def delay_next(self, path_prefix: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` requests under `path_prefix` are carried out (and their answer kept for an
        idempotent replay), but answered only after `seconds`."""
        for _ in range(times):
            self._delays.append((path_prefix, seconds))

    def keys(self, path: str) -> list[str]:
        """The idempotencyKey of every POST to `path`, failed and replayed ones included, in order."""
        return [r.body.get("idempotencyKey") for r in self.requests if r.method == "POST" and r.path == path]

    def posts(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST" and r.path == path and r.status < 300]

    def outbound(self) -> list[dict[str, Any]]:
        return [tx for tx in self.transactions.values() if tx["transactionType"] == "OUTBOUND"]

    # --- what happens on chain ----------------------------------------------------------------------

    def deposit(
        self, wallet_id: str, *, amount: str, source: str, token_id: str = USDC_TOKEN_ID, state: str = "COMPLETE"
    ) -> dict[str, Any]:
        tx = self._tx(
            wallet_id=wallet_id,
            tx_type="INBOUND",
            amount=amount,
            source=source,
            destination=self.wallets[wallet_id]["address"],
            token_id=token_id,
            state=state,
        )
        return tx

    def settle(self, tx_id: str, state: str = "COMPLETE") -> dict[str, Any]:
        self.transactions[tx_id]["state"] = state
        return dict(self.transactions[tx_id])

    def notification(
        self, tx: dict[str, Any], *, signing_key: ec.EllipticCurvePrivateKey | None = None, key_id: str = KEY_ID
    ) -> tuple[bytes, dict[str, str]]:
        kind = "transactions.inbound" if tx["transactionType"] == "INBOUND" else "transactions.outbound"
        body = json.dumps(
            {
                "subscriptionId": "5c5a0a4c-0000-4000-8000-000000000001",
                "notificationId": str(uuid.uuid4()),
                "notificationType": kind,
                "notification": tx,
                "timestamp": "2026-11-24T00:00:00.000Z",
                "version": 2,
            }
        ).encode()
        signature = (signing_key or self.signing_key).sign(body, ec.ECDSA(hashes.SHA256()))
        return body, {"X-Circle-Signature": base64.b64encode(signature).decode(), "X-Circle-Key-Id": key_id}

    # --- HTTP ---------------------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=next(self._ids), version=4))

    def _tx(
        self, *, wallet_id: str, tx_type: str, amount: str, source: str, destination: str, token_id: str, state: str
    ) -> dict[str, Any]:
        tx_id = self._new_id()
        tx = {
            "id": tx_id,
            "blockchain": "BASE",
            "walletId": wallet_id,
            "tokenId": token_id,
            "amounts": [amount],
            "sourceAddress": source,
            "destinationAddress": destination,
            "transactionType": tx_type,
            "state": state,
            "txHash": "0x" + tx_id.replace("-", "").ljust(64, "0"),
        }
        self.transactions[tx_id] = tx
        return dict(tx)

    def _handle(self, request: Request) -> Response:
        headers: dict[str, str] = {}
        with self._lock:
            body = request.get_json(silent=True) or {}
            status, text = self._answer(request, body, headers)
            self.requests.append(Seen(request.method, request.path, body, status))
            delay = self._take(self._delays, request.path)
        if delay is not None:
            time.sleep(delay[1])  # the work is done and kept: a retry with the same key gets the replay
        return Response(text, status=status, content_type="application/json", headers=headers)

    @staticmethod
    def _take(queue: deque[Any], path: str) -> Any:
        """Removes and returns the first arrangement whose path prefix matches, or None."""
        for index, item in enumerate(queue):
            if path.startswith(item[0]):
                del queue[index]
                return item
        return None

    def _answer(self, request: Request, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str]:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, 401, "Malformed authorization.")
        failure = self._take(self._failures, request.path)
        if failure is not None:
            _, status, code, message, retry_after = failure
            if retry_after is not None:
                headers["Retry-After"] = retry_after
            return _error(status, code, message)
        if request.method == "POST" and self.entity_secret:
            refused = self._check_entity_secret(body.get("entitySecretCiphertext"))
            if refused:
                return _error(400, 156016, refused)
        if request.method == "POST":
            key = body.get("idempotencyKey")
            try:
                uuid.UUID(str(key))
            except ValueError:
                return _error(400, 2, "Invalid idempotencyKey: must be a UUID")
            replay = self._replies.get(key)
            if replay is not None:
                # The ciphertext is new on every request by design; the rest must be the same.
                if _without_ciphertext(replay[0]) != _without_ciphertext(body):
                    return _error(409, 156001, "Idempotency key reused with another request")
                return replay[1], replay[2]
            status, text = self._route(request, body)
            if status < 500:
                self._replies[key] = (body, status, text)
            return status, text
        return self._route(request, body)

    def _check_entity_secret(self, ciphertext: Any) -> str:
        if not isinstance(ciphertext, str) or not ciphertext:
            return "entitySecretCiphertext is required"
        if ciphertext in self.ciphertexts:
            return "The entitySecretCiphertext has been used before; generate a new one for each request"
        self.ciphertexts.append(ciphertext)
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        try:
            secret = self.entity_key.decrypt(base64.b64decode(ciphertext), oaep)
        except ValueError:
            return "The entitySecretCiphertext cannot be decrypted"
        if secret.hex() != self.entity_secret.lower():
            return "The provided entity secret is invalid"
        return ""

    def _route(self, request: Request, body: dict[str, Any]) -> tuple[int, str]:
        path = request.path
        if request.method == "GET" and path == "/v1/w3s/config/entity/publicKey":
            pem = self.entity_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return 200, json.dumps({"data": {"publicKey": pem.decode()}})
        if request.method == "POST" and path == "/v1/w3s/developer/wallets":
            if body.get("blockchains") != ["BASE"] or body.get("count") != 1:
                return _error(400, 2, "Invalid blockchains or count")
            wallet_id = self._new_id()
            wallet = {
                "id": wallet_id,
                "state": "LIVE",
                "custodyType": "DEVELOPER",
                "blockchain": "BASE",
                "address": "0x" + wallet_id.replace("-", "")[:40].rjust(40, "a"),
                "accountType": "EOA",
                "refId": (body.get("metadata") or [{}])[0].get("refId", ""),
            }
            self.wallets[wallet_id] = wallet
            return 201, json.dumps({"data": {"wallets": [wallet]}})
        if request.method == "POST" and path == "/v1/w3s/developer/transactions/transfer":
            wallet_id = body.get("walletId", "")
            if wallet_id not in self.wallets:
                return _error(400, 156002, "Wallet not found")
            tx = self._tx(
                wallet_id=wallet_id,
                tx_type="OUTBOUND",
                amount=body["amounts"][0],
                source=self.wallets[wallet_id]["address"],
                destination=body["destinationAddress"],
                token_id=USDC_TOKEN_ID,
                state="INITIATED",
            )
            return 201, json.dumps({"data": {"id": tx["id"], "state": tx["state"]}})
        if request.method == "GET" and path == "/v1/w3s/transactions":
            wallet_ids = request.args.get("walletIds", "").split(",")
            found = [
                tx
                for tx in self.transactions.values()
                if tx["walletId"] in wallet_ids
                and tx["transactionType"] == request.args.get("txType", tx["transactionType"])
                and tx["state"] == request.args.get("state", tx["state"])
            ]
            return 200, json.dumps({"data": {"transactions": found}})
        match = re.fullmatch(r"/v1/w3s/transactions/([0-9a-f-]+)", path)
        if request.method == "GET" and match:
            tx = self.transactions.get(match.group(1))
            if tx is None:
                return _error(404, 156003, "Transaction not found")
            return 200, json.dumps({"data": {"transaction": tx}})
        match = re.fullmatch(r"/v2/notifications/publicKey/([0-9a-f-]+)", path)
        if request.method == "GET" and match:
            if match.group(1) != KEY_ID:
                return _error(404, 3, "Public key not found")
            return 200, json.dumps(
                {
                    "data": {
                        "id": KEY_ID,
                        "algorithm": "ECDSA_SHA_256",
                        "publicKey": self.public_key_b64,
                        "createDate": "2026-01-01T00:00:00Z",
                    }
                }
            )
        return _error(404, 3, "Not found")


def _without_ciphertext(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "entitySecretCiphertext"}


def _error(status: int, code: int, message: str) -> tuple[int, str]:
    return status, json.dumps({"code": code, "message": message})
