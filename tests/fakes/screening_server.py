"""Local TRM Labs and Chainalysis sanctions APIs on pytest-httpserver, answering in their shapes.

TRM: POST /public/v2/screening/addresses -> a list with addressRiskIndicators and entities (risk levels
1 Low, 5 Medium, 10 High, 15 Severe). Chainalysis: GET /api/v1/address/{address} -> {"identifications":
[...]}. Addresses can be marked risky / sanctioned. Like FakeStripe, either vendor can be told to answer
its next requests with an error (`fail_next`: a status, the vendor's error body, optionally Retry-After)
or to answer them late (`delay_next`, beyond a client's timeout). Error bodies: Chainalysis' sanctions API
answers `{"message": ...}`; TRM documents its statuses and Retry-After rather than a body schema, and
answers a JSON object with `code` (the status) and `message`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

TRM_KEY = "trm-test-key"
CHAINALYSIS_KEY = "chainalysis-test-key"
ERROR_MESSAGES = {
    401: "Unauthorized",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _error(vendor: str, status: int, message: str, *, retry_after: str | None = None) -> Response:
    body = {"message": message} if vendor == "chainalysis" else {"code": status, "message": message}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


@dataclass
class FakeScreening:
    server: HTTPServer
    severe: set[str] = field(default_factory=set)  # TRM: a Severe ownership indicator
    sanctioned: set[str] = field(default_factory=set)  # Chainalysis: an OFAC identification
    screened: list[tuple[str, str]] = field(default_factory=list)  # (vendor, address)
    # Every request each vendor answered, in order: (vendor, HTTP status).
    answered: list[tuple[str, int]] = field(default_factory=list)
    _failures: deque[tuple[str, int, str | None, str | None]] = field(default_factory=deque)
    _delays: deque[tuple[str, float]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.expect_request("/public/v2/screening/addresses", method="POST").respond_with_handler(self._trm)
        self.server.expect_request(re.compile(r"^/api/v1/address/.+"), method="GET").respond_with_handler(
            self._chainalysis
        )

    @property
    def api_base(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fail_next(
        self, vendor: str, status: int, times: int = 1, *, retry_after: str | None = None, message: str | None = None
    ) -> None:
        """The vendor's next `times` answers are `status` with its error body (and Retry-After if given)."""
        for _ in range(times):
            self._failures.append((vendor, status, retry_after, message))

    def delay_next(self, vendor: str, seconds: float, times: int = 1) -> None:
        """The vendor's next `times` answers come only after `seconds` (a client with a shorter timeout
        gives up first)."""
        for _ in range(times):
            self._delays.append((vendor, seconds))

    def _failure(self, vendor: str) -> Response | None:
        for index, (who, status, retry_after, message) in enumerate(self._failures):
            if who == vendor:
                del self._failures[index]
                return _error(
                    vendor,
                    status,
                    message or ERROR_MESSAGES.get(status, "Internal Server Error"),
                    retry_after=retry_after,
                )
        return None

    def _delay(self, vendor: str) -> None:
        for index, (who, seconds) in enumerate(self._delays):
            if who == vendor:
                del self._delays[index]
                time.sleep(seconds)
                return

    def _trm(self, request: Request) -> Response:
        self._delay("trm")
        response = self._trm_answer(request)
        self.answered.append(("trm", response.status_code))
        return response

    def _chainalysis(self, request: Request) -> Response:
        self._delay("chainalysis")
        response = self._chainalysis_answer(request)
        self.answered.append(("chainalysis", response.status_code))
        return response

    def _trm_answer(self, request: Request) -> Response:
        with self._lock:
            if request.authorization is None or request.authorization.username != TRM_KEY:
                return _error("trm", 401, "Unauthorized")
            failed = self._failure("trm")
            if failed is not None:
                return failed
            body = request.get_json()
            answers = []
            for item in body:
                address = item["address"]
                self.screened.append(("trm", address))
                indicators: list[dict[str, Any]] = []
                if address.lower() in self.severe:
                    indicators.append(
                        {
                            "category": "Sanctions",
                            "categoryId": "69",
                            "riskType": "OWNERSHIP",
                            "categoryRiskScoreLevel": 15,
                            "categoryRiskScoreLevelLabel": "Severe",
                            "incomingVolumeUsd": "1000",
                            "outgoingVolumeUsd": "0",
                            "totalVolumeUsd": "1000",
                        }
                    )
                answers.append(
                    {
                        "accountExternalId": None,
                        "address": address,
                        "addressSubmitted": address,
                        "chain": item["chain"],
                        "addressRiskIndicators": indicators,
                        "entities": [
                            {
                                "category": "Exchange",
                                "riskScoreLevel": 1,
                                "riskScoreLevelLabel": "Low",
                                "entity": "Some Exchange",
                            }
                        ],
                        "trmAppUrl": f"https://example.invalid/address/{address}",
                    }
                )
            return Response(json.dumps(answers), status=200, content_type="application/json")

    def _chainalysis_answer(self, request: Request) -> Response:
        with self._lock:
            if request.headers.get("X-API-Key") != CHAINALYSIS_KEY:
                return _error("chainalysis", 401, "Invalid API Key")
            failed = self._failure("chainalysis")
            if failed is not None:
                return failed
            address = request.path.rsplit("/", 1)[-1]
            self.screened.append(("chainalysis", address))
            identifications = []
            if address.lower() in self.sanctioned:
                identifications.append(
                    {
                        "category": "sanctions",
                        "name": "SANCTIONS: OFAC SDN Test Entity",
                        "description": "Listed",
                        "url": "https://example.invalid/sdn",
                    }
                )
            return Response(
                json.dumps({"identifications": identifications}), status=200, content_type="application/json"
            )
