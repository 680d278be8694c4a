"""Local TRM Labs and Chainalysis sanctions APIs on pytest-httpserver, answering in their shapes.

TRM: POST /public/v2/screening/addresses -> a list with addressRiskIndicators and entities (risk levels
1 Low, 5 Medium, 10 High, 15 Severe). Chainalysis: GET /api/v1/address/{address} -> {"identifications":
[...]}. Addresses can be marked risky / sanctioned, and either vendor can be told to fail.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

TRM_KEY = "trm-test-key"
CHAINALYSIS_KEY = "chainalysis-test-key"


@dataclass
class FakeScreening:
    server: HTTPServer
    severe: set[str] = field(default_factory=set)  # TRM: a Severe ownership indicator
    sanctioned: set[str] = field(default_factory=set)  # Chainalysis: an OFAC identification
    screened: list[tuple[str, str]] = field(default_factory=list)  # (vendor, address)
    _failures: deque[tuple[str, int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.expect_request("/public/v2/screening/addresses", method="POST").respond_with_handler(self._trm)
        self.server.expect_request(re.compile(r"^/api/v1/address/.+"), method="GET").respond_with_handler(
            self._chainalysis)

    @property
    def api_base(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fail_next(self, vendor: str, status: int, times: int = 1) -> None:
        for _ in range(times):
            self._failures.append((vendor, status))

    def _failure(self, vendor: str) -> Response | None:
        for index, (who, status) in enumerate(self._failures):
            if who == vendor:
                del self._failures[index]
                return Response(json.dumps({"message": "upstream unavailable"}), status=status,
                                content_type="application/json")
        return None

    def _trm(self, request: Request) -> Response:
        with self._lock:
            if request.authorization is None or request.authorization.username != TRM_KEY:
                return Response(json.dumps({"message": "Unauthorized"}), status=401, content_type="application/json")
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
                    indicators.append({"category": "Sanctions", "categoryId": "69", "riskType": "OWNERSHIP",
                                       "categoryRiskScoreLevel": 15, "categoryRiskScoreLevelLabel": "Severe",
                                       "incomingVolumeUsd": "1000", "outgoingVolumeUsd": "0",
                                       "totalVolumeUsd": "1000"})
                answers.append({"accountExternalId": None, "address": address, "addressSubmitted": address,
                                "chain": item["chain"], "addressRiskIndicators": indicators,
                                "entities": [{"category": "Exchange", "riskScoreLevel": 1,
                                              "riskScoreLevelLabel": "Low", "entity": "Some Exchange"}],
                                "trmAppUrl": f"https://example.invalid/address/{address}"})
            return Response(json.dumps(answers), status=200, content_type="application/json")

    def _chainalysis(self, request: Request) -> Response:
        with self._lock:
            if request.headers.get("X-API-Key") != CHAINALYSIS_KEY:
                return Response(json.dumps({"message": "Invalid API key"}), status=403,
                                content_type="application/json")
            failed = self._failure("chainalysis")
            if failed is not None:
                return failed
            address = request.path.rsplit("/", 1)[-1]
            self.screened.append(("chainalysis", address))
            identifications = []
            if address.lower() in self.sanctioned:
                identifications.append({"category": "sanctions", "name": "SANCTIONS: OFAC SDN Test Entity",
                                        "description": "Listed", "url": "https://example.invalid/sdn"})
            return Response(json.dumps({"identifications": identifications}), status=200,
                            content_type="application/json")
