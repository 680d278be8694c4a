"""A client that drives whole trades over HTTP against a server process, as a careful client would: each
mutation carries an Idempotency-Key, and a 503 is retried with the same key after the Retry-After it was
given (capped for tests). Every answer's status is recorded."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import httpx

PROBLEM = "application/problem+json"


class TradeClient:
    def __init__(self, base: str, answers: Counter[int], faults: list[str], *, limit_seconds: float = 120.0) -> None:
        self.http = httpx.Client(base_url=f"{base}/api/v1", timeout=60)
        self.answers = answers
        self.faults = faults
        self.limit_seconds = limit_seconds

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        deadline = time.monotonic() + self.limit_seconds
        while True:
            response = self.http.request(method, path, headers=headers, json=body if method == "POST" else None)
            self.answers[response.status_code] += 1
            if response.status_code >= 500 and response.status_code != 503:
                self.faults.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
            if response.status_code != 503:
                return response
            if not response.headers.get("content-type", "").startswith(PROBLEM) or not response.headers.get(
                "Retry-After"
            ):
                self.faults.append(f"{method} {path}: 503 without problem+json and Retry-After: {response.headers}")
            assert time.monotonic() < deadline, f"{method} {path} kept answering 503"
            time.sleep(min(float(response.headers.get("Retry-After") or 1), 0.2))

    def wait_for(self, escrow_id: str, token: str, state: str) -> None:
        deadline = time.monotonic() + self.limit_seconds
        while True:
            response = self.call("GET", f"/escrows/{escrow_id}", token)
            if response.status_code == 200 and response.json()["state"] == state:
                return
            assert time.monotonic() < deadline, f"{escrow_id} never reached {state}: {response.text[:300]}"
            time.sleep(0.05)

    def trade(self, buyer: tuple[str, str], seller: tuple[str, str]) -> str:
        """buyer, seller: (username, token). Propose, accept, pay, deliver, release; returns the escrow id."""
        created = self.call(
            "POST",
            "/escrows",
            buyer[1],
            {"seller": seller[0], "amount": "25.00", "currency": "USD", "description": "Dominus Empyreus"},
        )
        assert created.status_code == 202, created.text
        escrow_id = created.json()["escrow_id"]
        self.wait_for(escrow_id, seller[1], "AWAIT_ACCEPTANCE")
        accepted = self.call("POST", f"/escrows/{escrow_id}/accept", seller[1], {})
        assert accepted.status_code == 202, accepted.text
        self.wait_for(escrow_id, buyer[1], "AWAIT_FUNDS")
        steps = [
            ("POST", f"/sandbox/escrows/{escrow_id}/pay", buyer, "FUNDS_HELD"),
            ("POST", f"/escrows/{escrow_id}/deliver", seller, "DELIVERED"),
            ("POST", f"/escrows/{escrow_id}/release", buyer, "RELEASED"),
        ]
        for method, path, who, reached in steps:
            answer = self.call(method, path, who[1], {})
            deadline = time.monotonic() + self.limit_seconds
            while answer.status_code == 409 and answer.json().get("code") == "sandbox_unavailable":
                # The payment to pay is issued by the payments subscriber, which may not have run yet.
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.05)
                answer = self.call(method, path, who[1], {})
            assert answer.status_code == 202, (path, answer.status_code, answer.text)
            self.wait_for(escrow_id, buyer[1], reached)
        return escrow_id
