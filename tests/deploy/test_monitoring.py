"""The dashboard and the alert rules in deploy/ name only metrics that /api/v1/metrics really serves, the
rules are valid PromQL and fire when they should (promtool, when installed), and every panel has a query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.support import settle
from tests.helpers import act, create_escrow, pay

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool not installed (apt-get install prometheus brings it)"
RULES = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "escrow.json").read_text())
# PromQL functions and keywords that look like names; anything else starting escrow_ is a metric.
METRIC = re.compile(r"\bescrow_[a-z0-9_]+\b")
RECORDED = re.compile(r"\bescrow:[a-z0-9_:]+\b")


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in RULES["groups"] for rule in group["rules"]]


def panel_expressions() -> list[str]:
    return [target["expr"] for panel in DASHBOARD["panels"] for target in panel.get("targets", [])]


def test_every_panel_but_rows_has_a_query_and_the_dashboard_covers_the_brief() -> None:
    panels = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
    assert all(p.get("targets") and all(t["expr"].strip() for t in p["targets"]) for p in panels)
    used = " ".join(panel_expressions())
    for metric in (
        "escrow_command_to_event_seconds",
        "escrow_webhook_to_event_seconds",
        "escrow_http_request_duration_seconds_bucket",
        "escrow_http_requests_total",
        "escrow_bus_lag_seconds",
        "escrow_outbox_lag_seconds",
        "escrow_outbox_relayed_messages_total",
        "escrow_dead_letters_open_by_subscriber",
        "escrow_money_held_minor",
    ):
        assert metric in used, metric


def test_every_alert_says_what_to_do() -> None:
    alerts = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
    names = {rule["alert"] for rule in alerts}
    assert {
        "BusLagHigh",
        "OutboxRelayLagHigh",
        "DeadLettersOpen",
        "Http5xxRateHigh",
        "AvailabilitySLOFastBurn",
        "ComplianceHoldWaitingTooLong",
    } <= names
    for rule in alerts:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_recorded_series_used_anywhere_are_recorded_by_the_rules() -> None:
    recorded = {rule["record"] for group in RULES["groups"] for rule in group["rules"] if "record" in rule}
    used = {name for expr in [*rule_expressions(), *panel_expressions()] for name in RECORDED.findall(expr)}
    assert used and used <= recorded, used - recorded


def scraped_names(client: Any) -> set[str]:
    body = client.get("/api/v1/metrics").content.decode()
    names = set()
    for family in text_string_to_metric_families(body):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_a_panel_or_rule_names_is_served(api_client: Any, buyer: Any, seller: Any, client: Any) -> None:
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    held = create_escrow(as_buyer, seller=seller)["escrow_id"]
    released = create_escrow(as_buyer, seller=seller)["escrow_id"]
    for escrow_id in (held, released):
        assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    assert act(as_seller, released, "deliver").status_code == 202
    assert act(as_buyer, released, "release").status_code == 202
    settle()

    served = scraped_names(client)
    named = {name for expr in [*rule_expressions(), *panel_expressions()] for name in METRIC.findall(expr)}
    assert len(named) >= 12
    missing = sorted(named - served)
    assert not missing, f"named by the dashboard or the rules but not served: {missing}"
    assert "escrow_money_held_minor" in served  # with money held, the gauge has a sample, not just a name


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_rules_and_the_config_and_the_rule_tests_pass(tmp_path: Path) -> None:
    def promtool(*args: str, cwd: Path) -> str:
        result = subprocess.run([PROMTOOL or "", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "SUCCESS" in promtool("check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    # The config names container paths: check a copy that points at the files here.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "token").write_text("t")
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    config["scrape_configs"][0]["authorization"]["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)
