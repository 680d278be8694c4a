"""Kafka security from settings: SASL (SCRAM-SHA-512) over TLS reaches every aiokafka client the project
builds (the relay's producer, a consumer and its dead-letter producer, the admin client), every client is
built through those factories, and topics are created with the replication factor and min.insync.replicas
from settings (checked against the test broker, which runs one replica and no TLS)."""

from __future__ import annotations

import ast
import asyncio
import datetime
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from apps.outbox.kafka.admin import ensure_topics
from apps.outbox.kafka.catalog import TopicSpec
from apps.outbox.kafka.client import LoopRunner, make_admin, make_consumer, make_producer
from apps.outbox.kafka.consumer import AppConsumer

ROOT = Path(__file__).resolve().parents[2]
CLIENT_CLASSES = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}


def _ca_file(directory: Path) -> tuple[Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"escrow-test-ca-{uuid.uuid4().hex[:6]}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, name.rfc4514_string()


@pytest.fixture
def sasl_ssl(settings: Any, tmp_path: Path) -> str:
    cafile, subject = _ca_file(tmp_path)
    settings.KAFKA_SECURITY_PROTOCOL = "SASL_SSL"
    settings.KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
    settings.KAFKA_SASL_USERNAME = "escrow-relay"
    settings.KAFKA_SASL_PASSWORD = "s3cret-from-the-vault"
    settings.KAFKA_SSL_CAFILE = str(cafile)
    return subject


def _security(client: Any) -> dict[str, Any]:
    inner = getattr(client, "client", None) or client._client  # the producer's is public, the others' not
    context = inner._ssl_context
    return {
        "protocol": inner._security_protocol,
        "mechanism": inner._sasl_mechanism,
        "username": inner._sasl_plain_username,
        "password": inner._sasl_plain_password,
        "cas": [dict(item[0] for item in ca["subject"]) for ca in context.get_ca_certs()] if context else None,
        "verifies": context.check_hostname if context else None,
    }


def test_sasl_over_tls_reaches_every_client_the_project_builds(sasl_ssl: str, transactional_db: None) -> None:
    runner = LoopRunner()
    try:
        consumer = AppConsumer(app="projections", servers="broker-1:9093")
        clients = {
            "relay producer": runner.build(lambda: make_producer("broker-1:9093")),
            "consumer": runner.build(
                lambda: make_consumer("escrow.events.v1", servers=consumer.servers, group_id="projections")
            ),
            "dead-letter producer": runner.build(lambda: make_producer(consumer.servers, client_id="dlq")),
            "admin": runner.build(lambda: make_admin("broker-1:9093", client_id="escrow-topics")),
        }
        common_name = sasl_ssl.removeprefix("CN=")
        for what, client in clients.items():
            seen = _security(client)
            assert seen["protocol"] == "SASL_SSL", what
            assert seen["mechanism"] == "SCRAM-SHA-512", what
            assert (seen["username"], seen["password"]) == ("escrow-relay", "s3cret-from-the-vault"), what
            assert {"commonName": common_name} in seen["cas"], what  # our CA, not just the system's
            assert seen["verifies"] is True, what
    finally:
        runner.close()


def test_every_aiokafka_client_in_the_project_is_built_by_the_factories_that_apply_security() -> None:
    """A client constructed anywhere else would bypass the settings: only apps/outbox/kafka/client.py may."""
    offenders = []
    for path in [*ROOT.glob("apps/**/*.py"), *ROOT.glob("bench/**/*.py")]:
        if path.match("apps/outbox/kafka/client.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in CLIENT_CLASSES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    "setting, value",
    [("KAFKA_SECURITY_PROTOCOL", "SASL_TLS"), ("KAFKA_SASL_MECHANISM", "GSSAPI"), ("KAFKA_SASL_PASSWORD", "")],
)
def test_a_wrong_or_missing_security_setting_is_refused(sasl_ssl: str, settings: Any, setting: str, value: str) -> None:
    setattr(settings, setting, value)
    with pytest.raises(ImproperlyConfigured):
        make_producer("broker-1:9093")


@pytest.mark.kafka
def test_topics_are_created_with_replication_and_min_insync_from_settings(kafka: str, settings: Any) -> None:
    settings.KAFKA_MIN_INSYNC_REPLICAS = 1  # the test broker has one replica; production: 3 and 2
    spec = TopicSpec(f"escrow.test-{uuid.uuid4().hex[:8]}.v1", 7)
    [status] = asyncio.run(ensure_topics(servers=kafka, partitions=3, replication_factor=1, specs=[spec]))
    assert status.created and status.partitions == 3
    configs = asyncio.run(_topic_configs(kafka, spec.name))
    assert configs.get("min.insync.replicas") == "1", configs
    assert configs.get("retention.ms") == str(7 * 24 * 3600 * 1000)
    # More in sync than there are replicas can never be satisfied: refused before asking the broker.
    with pytest.raises(ValueError):
        asyncio.run(
            ensure_topics(
                servers=kafka,
                partitions=3,
                replication_factor=1,
                min_insync_replicas=2,
                specs=[TopicSpec(spec.name + "x", 7)],
            )
        )
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("kafka_topics", "--replication-factor", "1", "--min-insync-replicas", "2")


async def _topic_configs(servers: str, topic: str) -> dict[str, str]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = make_admin(servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_, _, _, _, entries)] = response.resources
        return {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()
