"""Interactions signed like Discord signs them (Ed25519 over timestamp + raw body, with a test key pair),
shaped like Discord's documented payloads, posted to the real endpoint."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.test import Client

from tests.notifications.conftest import discord_server, fake_discord  # noqa: F401  (the same fake Discord)

ENDPOINT = "/api/v1/discord/interactions"
APPLICATION_ID = "1300000000000000001"
BOT_TOKEN = "test-bot-token"
GUILD_ID = "1300000000000000009"
CHANNEL_ID = "1300000000000000010"
_ids = itertools.count(1_400_000_000_000_000_000)


def next_snowflake() -> str:
    return str(next(_ids))


@dataclass
class DiscordUser:
    id: str
    username: str

    def as_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username.title(),
            "avatar": None,
        }


@dataclass
class Signer:
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_hex(self) -> str:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {"X-Signature-Ed25519": self.key.sign(stamp.encode() + body).hex(), "X-Signature-Timestamp": stamp}


@pytest.fixture
def signer(settings: Any) -> Signer:
    settings.PUBLIC_BASE_URL = "http://testserver"
    signer = Signer()
    settings.DISCORD_PUBLIC_KEY = signer.public_hex
    settings.DISCORD_APPLICATION_ID = APPLICATION_ID
    return signer


@dataclass
class Sent:
    status: int
    body: dict[str, Any]

    @property
    def type(self) -> int:
        return self.body["type"]

    @property
    def data(self) -> dict[str, Any]:
        return self.body.get("data") or {}

    @property
    def content(self) -> str:
        return self.data.get("content", "")

    @property
    def custom_ids(self) -> list[str]:
        return [
            b["custom_id"] for row in self.data.get("components", []) for b in row["components"] if "custom_id" in b
        ]

    @property
    def links(self) -> list[str]:
        return [b["url"] for row in self.data.get("components", []) for b in row["components"] if b.get("style") == 5]

    @property
    def ephemeral(self) -> bool:
        return bool(self.data.get("flags", 0) & 64)


@pytest.fixture
def post_raw(signer: Signer) -> Callable[..., Any]:
    """post_raw(body_bytes, headers=None, timestamp=None): the HTTP response of the endpoint."""
    client = Client()

    def post(body: bytes, *, headers: dict[str, str] | None = None, timestamp: int | None = None) -> Any:
        sent = signer.headers(body, timestamp=timestamp) if headers is None else headers
        return client.post(ENDPOINT, data=body, content_type="application/json", headers=sent)

    return post


@pytest.fixture
def interact(post_raw: Callable[..., Any]) -> Callable[[dict[str, Any]], Sent]:
    """interact(payload): sign and post an interaction; 200 expected."""

    def send(payload: dict[str, Any]) -> Sent:
        response = post_raw(json.dumps(payload).encode())
        assert response.status_code == 200, response.content
        return Sent(response.status_code, response.json())

    return send


def _base(kind: int, user: DiscordUser, *, in_dm: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": next_snowflake(),
        "application_id": APPLICATION_ID,
        "type": kind,
        "token": f"interaction-token-{next_snowflake()}",
        "version": 1,
        "locale": "en-US",
        "app_permissions": "2248473465835073",
        "entitlements": [],
        "authorizing_integration_owners": {"0": GUILD_ID},
    }
    if in_dm:
        payload["user"] = user.as_payload()
        payload["channel_id"] = next_snowflake()
        payload["context"] = 1
    else:
        payload["guild_id"] = GUILD_ID
        payload["channel_id"] = CHANNEL_ID
        payload["context"] = 0
        payload["member"] = {
            "user": user.as_payload(),
            "roles": [],
            "nick": None,
            "permissions": "2248473465835073",
            "joined_at": "2025-01-01T00:00:00.000000+00:00",
            "deaf": False,
            "mute": False,
        }
    return payload


def slash(
    user: DiscordUser,
    sub: str,
    options: list[dict[str, Any]] | None = None,
    *,
    resolved_users: list[DiscordUser] = (),
    in_dm: bool = False,
) -> dict[str, Any]:
    """APPLICATION_COMMAND (2): /escrow <sub> with options, and resolved.users for USER options."""
    payload = _base(2, user, in_dm=in_dm)
    payload["data"] = {
        "id": "1300000000000000100",
        "name": "escrow",
        "type": 1,
        "guild_id": GUILD_ID,
        "options": [{"name": sub, "type": 1, "options": options or []}],
    }
    if resolved_users:
        payload["data"]["resolved"] = {"users": {u.id: u.as_payload() for u in resolved_users}}
    return payload


def create_options(
    counterparty: DiscordUser, amount: str = "149.99", item: str = "Dominus Empyreus", role: str | None = None
) -> list[dict[str, Any]]:
    options = [
        {"name": "counterparty", "type": 6, "value": counterparty.id},
        {"name": "amount", "type": 3, "value": amount},
        {"name": "item", "type": 3, "value": item},
    ]
    if role is not None:
        options.append({"name": "role", "type": 3, "value": role})
    return options


def click(user: DiscordUser, custom_id: str, *, in_dm: bool = True) -> dict[str, Any]:
    """MESSAGE_COMPONENT (3): a button on a message the bot sent."""
    payload = _base(3, user, in_dm=in_dm)
    payload["data"] = {"custom_id": custom_id, "component_type": 2}
    payload["message"] = {
        "id": next_snowflake(),
        "channel_id": payload["channel_id"],
        "type": 0,
        "content": "…",
        "author": {"id": APPLICATION_ID, "username": "escrow-bot", "bot": True},
        "components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "…", "custom_id": custom_id}]}],
        "flags": 0,
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
    }
    return payload


def modal_submit(user: DiscordUser, custom_id: str, statement: str, *, in_dm: bool = True) -> dict[str, Any]:
    """MODAL_SUBMIT (5) of the dispute form, opened from a button on a message."""
    payload = click(user, custom_id, in_dm=in_dm)
    payload["type"] = 5
    payload["data"] = {
        "custom_id": custom_id,
        "components": [{"type": 1, "components": [{"type": 4, "custom_id": "statement", "value": statement}]}],
    }
    return payload
