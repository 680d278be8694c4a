"""deploy/compose.yaml is a valid Compose file (against the vendored Compose Specification schema) and
complete: every service has a health check and runs as a non-root user, the Discord settings reach the
processes that use them, PROMETHEUS_MULTIPROC_DIR is set for the multi-process web server, Kafka is a
current KRaft broker, Prometheus and Grafana get the rules and the dashboard; the image installs the
locked tree, collects static files and runs as a non-root user."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
APP_SERVICES = {"init", "web", "bus", "relay", "projections", "notifications"}
# Made per deployment (docs/operations.md, docs/kafka.md), never committed nor copied into the image.
GENERATED = ("./secrets", "./kafka-tls")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_check_is_not_vacuous(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["web"]["healthcheck"]["every"] = "30s"
    broken["services"]["bus"]["depends_on"] = {"init": {"condition": "whenever"}}
    errors = schema_errors(broken)
    assert any("every" in e for e in errors) and any("whenever" in e for e in errors), errors


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check, f"{name} has no health check"
        if check.get("disable"):
            assert name == "init" and service.get("restart") == "no", f"{name} disables its health check"
            continue
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) > 1, name
    for name in ("relay", "projections", "notifications", "bus"):
        assert "--kafka" in compose["services"][name]["healthcheck"]["test"], name
    assert "/api/v1/ready" in " ".join(compose["services"]["web"]["healthcheck"]["test"])


def test_services_run_as_non_root_users(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "postgres":
            continue  # the image's entrypoint initialises as root, then runs the server as `postgres`
        user = str(service.get("user", ""))
        assert user and user.split(":")[0] not in {"0", "root"}, f"{name} runs as {user or 'the image default'}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_discord_settings_reach_the_processes_that_use_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # DM retries and Discord follow-ups are bus-worker ticks; first sends happen in the notifications consumer.
    for name in ("bus", "notifications"):
        assert "DISCORD_BOT_TOKEN" in environment(services[name]), name
    assert "DISCORD_APPLICATION_ID" in environment(services["bus"])
    # The interactions endpoint is served by the web process and verifies signatures with the public key.
    assert "DISCORD_PUBLIC_KEY" in environment(services["web"])
    for name in ("relay", "projections", "init"):
        assert "DISCORD_BOT_TOKEN" not in environment(services[name]), f"{name} needs no bot token"


def test_the_web_process_has_its_multiprocess_metrics_directory(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    directory = environment(web)["PROMETHEUS_MULTIPROC_DIR"]
    assert directory in web["tmpfs"]  # empty at every start, as prometheus_client requires
    assert "--workers" in web["command"]
    assert environment(web)["METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
    assert "metrics_token" in web["secrets"] and "metrics_token" in compose["services"]["prometheus"]["secrets"]


def test_kafka_is_a_current_broker_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and int(tag.split(".")[0]) >= 4  # 4.x: KRaft only, no ZooKeeper
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(map(str, env))


def test_prometheus_and_grafana_are_provisioned_with_the_rules_and_the_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in services["prometheus"]["volumes"] if m.startswith("./")}
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/api/v1/metrics" and job["static_configs"][0]["targets"] == ["web:8000"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"

    grafana = {m.split(":")[0]: m.split(":")[1] for m in services["grafana"]["volumes"] if m.startswith("./")}
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "escrow.yml").read_text())
    assert grafana["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "escrow.json").read_text())
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])} == {
        source["datasources"][0]["uid"]
    }


def test_every_file_the_stack_mounts_or_builds_from_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith(GENERATED):
                continue
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {mount}"
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
    assert set(compose["services"]) >= APP_SERVICES | {"postgres", "kafka", "prometheus", "grafana"}


def test_the_image_installs_the_lock_collects_static_files_and_ignores_local_state() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "collectstatic --noinput" in dockerfile
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "db.sqlite3*", "media", ".demo-tokens.json"} <= ignored
    committed_ignores = (ROOT / ".gitignore").read_text().split()
    for generated in GENERATED:
        path = "deploy/" + generated.removeprefix("./")
        assert path in ignored and f"{path}/" in committed_ignores, f"{path} must stay out of git and the image"
