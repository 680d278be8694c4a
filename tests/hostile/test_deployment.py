"""Production settings: `manage.py check --deploy` is clean, and API responses carry the security headers.
Both run in a subprocess, because settings are read once per process from the environment."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST = "escrow.example.com"


def production_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "HTTPS", "SECRET_KEY", "ALLOWED_HOSTS"}}
    env.update(
        {
            "DEBUG": "0",
            "HTTPS": "1",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": HOST,
            "METRICS_TOKEN": secrets.token_urlsafe(32),
            "DJANGO_SETTINGS_MODULE": "escrow_project.settings",
        }
    )
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout


def test_check_deploy_fails_without_a_real_secret_key() -> None:
    """The check is not vacuous: the built-in development key is reported."""
    env = production_env()
    del env["SECRET_KEY"]
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_check_deploy_reports_metrics_without_a_token() -> None:
    env = production_env()
    del env["METRICS_TOKEN"]
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    assert "gateway.W001" in result.stdout + result.stderr


SHOW_HEADERS = f"""
import json, django
django.setup()
from django.test import Client
client = Client()
out = {{}}
for name, secure in (("https", True), ("http", False)):
    r = client.get("/api/v1/health", secure=secure, HTTP_HOST="{HOST}")
    out[name] = {{"status": r.status_code, "headers": dict(r.headers)}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def production_responses() -> dict[str, dict[str, object]]:
    result = run(["-c", SHOW_HEADERS], production_env())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_api_responses_carry_security_headers(production_responses: dict[str, dict[str, object]]) -> None:
    https = production_responses["https"]
    assert https["status"] == 200
    headers = {k.lower(): v for k, v in https["headers"].items()}  # type: ignore[union-attr]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"


def test_plain_http_is_redirected_to_https(production_responses: dict[str, dict[str, object]]) -> None:
    http = production_responses["http"]
    assert http["status"] == 301
    assert str(http["headers"]["Location"]).startswith(f"https://{HOST}/")  # type: ignore[index]
