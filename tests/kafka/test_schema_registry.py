"""The Confluent Schema Registry wire format: the relay frames values and registers schemas with a
registry (a local fake answering like Confluent's REST API); consumers unframe and check the frame."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from apps.outbox import messages
from apps.outbox.kafka.consumer import AppConsumer
from apps.outbox.kafka.relay import OutboxRelay, PublishFailed, backlog
from apps.outbox.kafka.schema_registry import (
    CONTENT_TYPE,
    FramingError,
    frame,
    locate,
    parse_frame,
    proto_files,
    unframe,
)
from apps.outbox.models import ProcessedMessage
from apps.projections.models import EscrowView
from proto.escrow import v1 as escrow_v1
from tests.helpers import act, create_escrow, pay
from tests.kafka.broker import end_offsets, read_since

pytestmark = pytest.mark.kafka


class FakeRegistry:
    """Confluent's REST API, the parts a serializer uses: register a version (`{"id": N}`; the same
    schema under a subject answers the same id) and look a schema up under a subject."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.ids: dict[str, int] = {}  # canonical schema -> global id
        self.subjects: dict[str, list[dict[str, Any]]] = {}  # subject -> versions
        self.registrations: list[tuple[str, dict[str, Any]]] = []
        self.down = False
        # Reference subjects contain '/', sent as %2F; the server sees the decoded path.
        server.expect_request(re.compile(r"^/subjects/.+/versions$"), method="POST").respond_with_handler(self.register)
        server.expect_request(re.compile(r"^/subjects/(?!.*/versions$).+$"), method="POST").respond_with_handler(
            self.lookup
        )

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def _parse(self, request: Request) -> tuple[str, dict[str, Any], str]:
        subject = request.path.removeprefix("/subjects/").removesuffix("/versions")
        body = json.loads(request.data)
        return subject, body, json.dumps(body, sort_keys=True)

    def register(self, request: Request) -> Response:
        if self.down:
            return Response(json.dumps({"error_code": 50001, "message": "store error"}), 500, content_type=CONTENT_TYPE)
        subject, body, canonical = self._parse(request)
        if body.get("schemaType") != "PROTOBUF" or not body.get("schema"):
            return Response(
                json.dumps({"error_code": 42201, "message": "Invalid schema"}), 422, content_type=CONTENT_TYPE
            )
        for reference in body.get("references", []):
            versions = self.subjects.get(reference["subject"], [])
            if not any(v["version"] == reference["version"] for v in versions):
                return Response(
                    json.dumps({"error_code": 42201, "message": "unknown reference"}), 422, content_type=CONTENT_TYPE
                )
        self.registrations.append((subject, body))
        schema_id = self.ids.setdefault(canonical, len(self.ids) + 1)
        versions = self.subjects.setdefault(subject, [])
        if not any(v["id"] == schema_id for v in versions):
            versions.append({"id": schema_id, "version": len(versions) + 1})
        return Response(json.dumps({"id": schema_id}), 200, content_type=CONTENT_TYPE)

    def lookup(self, request: Request) -> Response:
        subject, _, canonical = self._parse(request)
        schema_id = self.ids.get(canonical)
        for version in self.subjects.get(subject, []):
            if version["id"] == schema_id:
                return Response(
                    json.dumps({"subject": subject, "id": schema_id, "version": version["version"]}),
                    200,
                    content_type=CONTENT_TYPE,
                )
        return Response(
            json.dumps({"error_code": 40403, "message": "Schema not found"}), 404, content_type=CONTENT_TYPE
        )


@pytest.fixture
def registry(httpserver: HTTPServer, settings: Any) -> FakeRegistry:
    fake = FakeRegistry(httpserver)
    settings.SCHEMA_REGISTRY_URL = fake.url
    return fake


def test_frame_bytes_match_confluents_protobuf_serializer() -> None:
    # EscrowCreated is the first message of escrow/v1/events.proto: index path [0], written as one 0 byte.
    created_file, created_path = locate("escrow.v1.EscrowCreated")
    assert created_file.path == "escrow/v1/events.proto" and created_path == (0,)
    assert frame(schema_id=7, path=created_path, payload=b"\x0a\x01x") == b"\x00\x00\x00\x00\x07\x00\x0a\x01x"
    # EscrowDelivered is the third: count 1 and index 2, both zigzag varints (2, 4).
    _, delivered_path = locate("escrow.v1.EscrowDelivered")
    assert delivered_path == (2,)
    assert frame(schema_id=258, path=delivered_path, payload=b"") == b"\x00\x00\x00\x01\x02\x02\x04"
    # Index 70 needs two varint bytes after zigzag (140 = 0x8c 0x01).
    assert parse_frame(frame(schema_id=1, path=(70,), payload=b"p")).path == (70,)
    assert parse_frame(b"\x00\x00\x00\x01\x02\x02\x04").payload == b""


def test_unframe_checks_the_frame_against_the_type_header() -> None:
    payload = bytes(escrow_v1.EscrowDelivered(escrow_id="e-1"))
    framed = frame(schema_id=3, path=(2,), payload=payload)
    assert unframe(framed, type_name="escrow.v1.EscrowDelivered") == payload
    assert unframe(payload, type_name="escrow.v1.EscrowDelivered") == payload  # plain values still read
    with pytest.raises(FramingError, match="does not match"):
        unframe(framed, type_name="escrow.v1.EscrowCreated")
    with pytest.raises(FramingError):
        unframe(b"\x00\x00\x00", type_name="escrow.v1.EscrowDelivered")  # truncated header
    with pytest.raises(FramingError):
        unframe(b"\x00\x00\x00\x00\x01\x02\x84", type_name="escrow.v1.EscrowDelivered")  # varint cut short


def test_relay_registers_topic_subjects_with_references_and_consumers_apply_framed_records(
    kafka, registry, fresh_group, settings, api_client, buyer, seller
):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["escrow", "payments"]  # projections are fed from Kafka only
    group = fresh_group("projections")
    since = end_offsets(kafka, list(messages.TOPICS))
    as_buyer, as_seller = api_client(buyer), api_client(seller)

    def catch_up() -> None:
        OutboxRelay(servers=kafka).run(once=True)
        assert AppConsumer(app="projections", group_id=group).run(until_caught_up=True).dead_lettered == 0

    escrow_id = create_escrow(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    catch_up()  # the sandbox pay endpoint checks the buyer against the read model
    assert pay(as_buyer, escrow_id).status_code == 202
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert act(as_buyer, escrow_id, "release").status_code == 202
    catch_up()

    assert EscrowView.objects.get(escrow_id=escrow_id).state == "RELEASED"
    records = read_since(kafka, since)
    assert records
    for record in records:
        type_name = dict(record.headers)["type"].decode()
        framed = parse_frame(record.value)
        proto, path = locate(type_name)
        assert framed.path == path
        # The id is the one the registry gave for this file under <topic>-value.
        subject_ids = {v["id"] for v in registry.subjects[f"{record.topic}-value"]}
        assert framed.schema_id in subject_ids
        assert messages.decode(type_name, framed.payload) is not None
    events = [body for subject, body in registry.registrations if subject == "escrow.events.v1-value"]
    assert events and events[0]["schema"] == proto_files()["escrow/v1/events.proto"].text
    # Imports are references registered under their own path (the well-known timestamp.proto is built in).
    assert {r["name"] for r in events[0]["references"]} == {"common/v1/common.proto", "escrow/v1/commands.proto"}
    assert "common/v1/common.proto" in registry.subjects
    assert not any(subject.startswith("google/") for subject in registry.subjects)
    # Registered once per (subject, file) by each relay (two ran here), not once per record.
    events_text = proto_files()["escrow/v1/events.proto"].text
    assert (
        len([b for s, b in registry.registrations if s == "escrow.events.v1-value" and b["schema"] == events_text]) <= 2
    )


def test_registry_down_fails_the_batch_and_marks_nothing(kafka, registry, api_client, buyer, seller):
    create_escrow(api_client(buyer), seller=seller, amount="20.00")
    pending = backlog().pending
    assert pending > 0
    registry.down = True
    since = end_offsets(kafka, list(messages.TOPICS))
    relay = OutboxRelay(servers=kafka)
    with pytest.raises(PublishFailed, match="schema registry answered 500"):
        relay.run(once=True)
    assert relay.stats.published == 0
    assert backlog().pending == pending
    assert read_since(kafka, since) == []

    registry.down = False
    assert OutboxRelay(servers=kafka).run(once=True).published == pending
    assert backlog().pending == 0


async def _produce(servers: str, records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False)
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def test_a_frame_naming_another_message_is_dead_lettered_and_not_applied(
    kafka, fresh_group, settings, transactional_db
):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["escrow", "payments"]
    group = fresh_group("projections")
    dlq = messages.ESCROW_EVENTS + ".dlq"
    since = end_offsets(kafka, [dlq])
    escrow_id, event_id = str(uuid.uuid4()), uuid.uuid4()
    payload = bytes(escrow_v1.EscrowDelivered(escrow_id=escrow_id))
    # Says EscrowCreated (index [0]) in the frame but EscrowDelivered in the type header.
    wrong = b"\x00" + struct.pack(">I", 1) + b"\x00" + payload
    headers = [
        ("event_id", str(event_id).encode()),
        ("type", b"escrow.v1.EscrowDelivered"),
        ("aggregate_id", escrow_id.encode()),
        ("aggregate_version", b"3"),
        ("occurred_at", b"2026-01-01T00:00:00+00:00"),
    ]
    asyncio.run(_produce(kafka, [(messages.ESCROW_EVENTS, escrow_id.encode(), wrong, headers)]))

    stats = AppConsumer(app="projections", group_id=group, max_attempts=3).run(until_caught_up=True)

    assert stats.dead_lettered == 1 and stats.applied == 0
    assert not ProcessedMessage.objects.filter(event_id=event_id).exists()
    dead = read_since(kafka, since)
    assert len(dead) == 1
    assert "does not match" in dict(dead[0].headers)["dlq.error"].decode()
    assert dict(dead[0].headers)["dlq.attempts"] == b"1"  # a bad frame is not retried
