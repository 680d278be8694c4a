"""Confluent Schema Registry wire format for record values (optional: when SCHEMA_REGISTRY_URL is set).

A framed value is `0x00` (magic byte), the schema id (4 bytes, big-endian), the message-index path of
the type inside its .proto file (zigzag varints: the count, then each index; the common path `[0]` is
the single byte `0x00`), then the protobuf payload: what Confluent's protobuf serializer writes, so
Kafka Connect, ksqlDB and Confluent's deserializers read our topics.

Schemas are registered under the topic-name strategy (`<topic>-value`) with their .proto text; each
import is registered under its own path as subject and passed as a reference (Confluent's default
reference naming). Well-known `google/protobuf/*` imports are built into the registry and skipped.

Consumers unframe by the first byte: a protobuf message can never start with 0x00 (field number 0 is
invalid), so a framed and a plain value cannot be confused, and a mixed topic (during a rollout) reads.
"""

from __future__ import annotations

import re
import struct
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import requests

from apps.outbox.kafka.envelope import EnvelopeError

MAGIC_BYTE = 0
PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto"
WELL_KNOWN_PREFIX = "google/protobuf/"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryError(RuntimeError):
    """The registry refused or could not be reached; the relay retries the batch."""


class FramingError(EnvelopeError):
    """A value that claims the wire format but does not hold up (a poison record)."""


# --- varints ---------------------------------------------------------------------------------------


def zigzag_varint(value: int) -> bytes:
    encoded = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = encoded & 0x7F
        encoded >>= 7
        if encoded:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_zigzag_varint(data: bytes, offset: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise FramingError("truncated message-index varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), offset
        shift += 7


def message_index_bytes(path: tuple[int, ...]) -> bytes:
    if path == (0,):
        return b"\x00"  # Confluent's shortcut for the first message of the file
    return zigzag_varint(len(path)) + b"".join(zigzag_varint(index) for index in path)


def frame(*, schema_id: int, path: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([MAGIC_BYTE]) + struct.pack(">I", schema_id) + message_index_bytes(path) + payload


@dataclass(frozen=True)
class Framed:
    schema_id: int
    path: tuple[int, ...]
    payload: bytes


def parse_frame(value: bytes) -> Framed:
    if len(value) < 6 or value[0] != MAGIC_BYTE:
        raise FramingError("value is not in the schema registry wire format")
    schema_id = struct.unpack(">I", value[1:5])[0]
    count, offset = read_zigzag_varint(value, 5)
    if count < 0 or count > 32:
        raise FramingError(f"implausible message-index count {count}")
    path: list[int] = []
    for _ in range(count):
        index, offset = read_zigzag_varint(value, offset)
        if index < 0:
            raise FramingError(f"negative message index {index}")
        path.append(index)
    # A count of 0 is the [0] shortcut.
    return Framed(schema_id=schema_id, path=tuple(path) or (0,), payload=value[offset:])


# --- the .proto sources ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtoFile:
    path: str  # import path, e.g. "escrow/v1/events.proto"
    text: str
    imports: tuple[str, ...]
    messages: dict[str, tuple[int, ...]] = field(default_factory=dict)  # full name -> index path


_TOKENS = re.compile(r'"(?:\\.|[^"\\])*"|[A-Za-z_][\w.]*|[{};=]|\S')
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def parse_proto(path: str, text: str) -> ProtoFile:
    tokens = _TOKENS.findall(_COMMENTS.sub(" ", text))
    package = ""
    imports: list[str] = []
    messages: dict[str, tuple[int, ...]] = {}
    # One frame per open brace: (message name or None, path, how many messages declared inside so far)
    stack: list[tuple[str | None, tuple[int, ...], list[int]]] = [(None, (), [0])]
    pending_message: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if len(stack) == 1 and token == "package":
            package = tokens[i + 1]
        elif len(stack) == 1 and token == "import":
            quoted = next(t for t in tokens[i + 1 :] if t.startswith('"'))
            imports.append(quoted.strip('"'))
        elif token == "message" and i + 2 < len(tokens) and tokens[i + 2] == "{":
            pending_message = tokens[i + 1]
        elif token == "{":
            parent_names = [name for name, _, _ in stack if name]
            _, parent_path, counter = stack[-1]
            if pending_message is not None:
                index_path = (*parent_path, counter[0])
                counter[0] += 1
                full = ".".join(filter(None, [package, *parent_names, pending_message]))
                messages[full] = index_path
                stack.append((pending_message, index_path, [0]))
                pending_message = None
            else:
                # enum, oneof, service, option aggregate: their nested messages do not exist
                stack.append((None, parent_path, [0]))
        elif token == "}":
            stack.pop()
        i += 1
    return ProtoFile(path=path, text=text, imports=tuple(imports), messages=messages)


@cache
def proto_files() -> dict[str, ProtoFile]:
    files = {}
    for source in sorted(PROTO_ROOT.rglob("*.proto")):
        path = source.relative_to(PROTO_ROOT).as_posix()
        if not path.startswith(WELL_KNOWN_PREFIX):
            files[path] = parse_proto(path, source.read_text())
    return files


@cache
def locate(type_name: str) -> tuple[ProtoFile, tuple[int, ...]]:
    """The .proto file declaring a message type, and the type's index path in it."""
    for proto in proto_files().values():
        if type_name in proto.messages:
            return proto, proto.messages[type_name]
    raise FramingError(f"no .proto file under proto/ declares {type_name}")


# --- registering and framing -----------------------------------------------------------------------


class ConfluentProtobufFraming:
    """Frames values as Confluent's protobuf serializer does, registering schemas on first use."""

    def __init__(self, *, url: str, timeout_seconds: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._session = requests.Session()
        self._session.headers["Content-Type"] = CONTENT_TYPE
        self._ids: dict[tuple[str, str], int] = {}
        self._reference_versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def encode(self, topic: str, type_name: str, payload: bytes) -> bytes:
        proto, path = locate(type_name)
        return frame(schema_id=self.schema_id(subject=f"{topic}-value", proto=proto), path=path, payload=payload)

    def schema_id(self, *, subject: str, proto: ProtoFile) -> int:
        key = (subject, proto.path)
        with self._lock:
            if key not in self._ids:
                self._ids[key] = self._post(f"/subjects/{subject}/versions", self._body(proto))["id"]
            return self._ids[key]

    def _body(self, proto: ProtoFile) -> dict[str, Any]:
        references = [
            {"name": imported, "subject": imported, "version": self._reference_version(imported)}
            for imported in proto.imports
            if not imported.startswith(WELL_KNOWN_PREFIX)
        ]
        body: dict[str, Any] = {"schemaType": "PROTOBUF", "schema": proto.text}
        if references:
            body["references"] = references
        return body

    def _reference_version(self, path: str) -> int:
        if path not in self._reference_versions:
            proto = proto_files().get(path)
            if proto is None:
                raise SchemaRegistryError(f"import {path} is not under proto/")
            body = self._body(proto)  # its own imports first (depth first, as the serializer does)
            self._post(f"/subjects/{path}/versions", body)
            # Registering answers only the id; looking the schema up under its subject gives the version.
            self._reference_versions[path] = int(self._post(f"/subjects/{path}", body)["version"])
        return self._reference_versions[path]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.url + _quote_subject_path(path)
        try:
            response = self._session.post(url, json=body, timeout=self.timeout_seconds)
        except requests.RequestException as exc:
            raise SchemaRegistryError(f"schema registry unreachable at {self.url}: {exc!r}") from exc
        if response.status_code >= 300:
            raise SchemaRegistryError(
                f"schema registry answered {response.status_code} to POST {url}: {response.text[:300]}"
            )
        return response.json()


def _quote_subject_path(path: str) -> str:
    """`/subjects/<subject>/versions` with the subject percent-encoded (reference subjects contain '/')."""
    _, subjects, subject, *rest = path.split("/")
    return "/".join(["", subjects, requests.utils.quote(subject, safe=""), *rest])


def unframe(value: bytes, *, type_name: str) -> bytes:
    """The protobuf payload of a record value, framed or not. A framed value must name the same message
    as the record's `type` header, or it is a poison record."""
    if not value or value[0] != MAGIC_BYTE:
        return value
    framed = parse_frame(value)
    _, expected = locate(type_name)
    if framed.path != expected:
        raise FramingError(f"message index {list(framed.path)} does not match {type_name} (expected {list(expected)})")
    return framed.payload
