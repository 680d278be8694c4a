"""The outside contract check, in the suite: schemathesis's own command line against a live server (a real
socket, the whole middleware stack), every operation, with the checks an outside reviewer runs. Every
answer the API gives must be in the OpenAPI document (status, media type, headers, body), invalid data
must be refused, a missing required header must be a 4xx, an undeclared method 405, and a protected
operation must refuse a caller without credentials. Bounded: a few examples per operation and a time
budget, so the suite stays fast; SCHEMATHESIS_SEED replays a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cryptography.hazmat.primitives.ciphers  # noqa: F401 - allauth's JWT strategy reaches it as an attribute
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from apps.gateway.tokens import mint_access_token
from tests.helpers import create_escrow

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,"
    "ignored_auth"
)
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "4"))
TIME_BUDGET_SECONDS = 150


def test_every_operation_answers_as_the_openapi_document_says(
    live_server: Any, api_client: Any, buyer: Any, seller: Any, tmp_path: Path, settings: Any
) -> None:
    # Discord's endpoint switched on (it is a 404 without a key), with a key nobody here can sign for.
    settings.DISCORD_PUBLIC_KEY = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    # A real escrow of the caller's, so operations on one are reached past the 404 of an unknown id.
    escrow_id = create_escrow(api_client(buyer), seller=seller, amount="75.00")["escrow_id"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.escrow_id" = "{escrow_id}"\n')
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{live_server.url}/api/v1/schema",
        "--checks",
        CHECKS,
        "--mode",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(TIME_BUDGET_SECONDS),
        "--request-timeout",
        "20",
        "--no-color",
        "-H",
        f"Authorization: Bearer {mint_access_token(buyer)}",
        "--report-dir",
        str(tmp_path / "report"),
        "--generation-database",
        ":memory:",
    ]
    if os.environ.get("SCHEMATHESIS_SEED"):
        command += ["--seed", os.environ["SCHEMATHESIS_SEED"]]

    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_BUDGET_SECONDS + 120, check=False
    )

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    assert "No issues found" in output or " passed" in output, output[-3000:]
