"""The endpoint's front door: signatures, PING, malformed bodies, replays, switched off without a key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.discord.models import InteractionReceipt
from apps.escrow.models import Escrow, EscrowEvent
from apps.notifications.public import DiscordLink
from apps.outbox.models import OutboxMessage
from tests.discord.conftest import ENDPOINT, DiscordUser, Signer, create_options, slash

pytestmark = pytest.mark.django_db(transaction=True)

ALICE = DiscordUser("1500000000000000001", "alice")
BOB = DiscordUser("1500000000000000002", "bob")


def tables() -> dict[str, int]:
    return {
        "users": get_user_model().objects.count(),
        "links": DiscordLink.objects.count(),
        "escrows": Escrow.objects.count(),
        "events": EscrowEvent.objects.count(),
        "outbox": OutboxMessage.objects.count(),
        "receipts": InteractionReceipt.objects.count(),
    }


def test_ping_is_answered_with_pong(post_raw: Callable[..., Any]) -> None:
    response = post_raw(
        json.dumps(
            {"id": "1400000000000000001", "application_id": "13", "type": 1, "token": "t", "version": 1}
        ).encode()
    )

    assert response.status_code == 200
    assert response.json() == {"type": 1}


def test_without_a_public_key_the_endpoint_does_not_exist(signer: Signer, settings: Any) -> None:
    settings.DISCORD_PUBLIC_KEY = ""
    body = b'{"id": "1", "type": 1}'

    response = Client().post(ENDPOINT, data=body, content_type="application/json", headers=signer.headers(body))

    assert response.status_code == 404


def test_a_get_is_not_allowed(signer: Signer) -> None:
    assert Client().get(ENDPOINT).status_code == 405


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Signature-Timestamp": str(int(time.time()))},
        {"X-Signature-Ed25519": "ab" * 64},
        {"X-Signature-Ed25519": "not hex", "X-Signature-Timestamp": str(int(time.time()))},
        {"X-Signature-Ed25519": "ab" * 10, "X-Signature-Timestamp": str(int(time.time()))},
    ],
    ids=["none", "no-signature", "no-timestamp", "not-hex", "short"],
)
def test_missing_or_garbled_signatures_are_401_and_change_nothing(
    post_raw: Callable[..., Any], headers: dict[str, str]
) -> None:
    before = tables()
    body = json.dumps(slash(ALICE, "create", create_options(BOB), resolved_users=[BOB])).encode()

    response = post_raw(body, headers=headers)

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert tables() == before


def test_a_forged_signature_is_401_and_changes_nothing(post_raw: Callable[..., Any]) -> None:
    before = tables()
    body = json.dumps(slash(ALICE, "create", create_options(BOB), resolved_users=[BOB])).encode()
    forger = Signer()  # a key pair that is not the application's

    response = post_raw(body, headers=forger.headers(body))

    assert response.status_code == 401
    assert tables() == before == {"users": 0, "links": 0, "escrows": 0, "events": 0, "outbox": 0, "receipts": 0}


def test_a_signed_body_that_was_tampered_with_is_401(post_raw: Callable[..., Any], signer: Signer) -> None:
    body = json.dumps(slash(ALICE, "create", create_options(BOB, amount="1.00"), resolved_users=[BOB])).encode()
    headers = signer.headers(body)
    tampered = body.replace(b'"1.00"', b'"9999.00"')

    assert post_raw(tampered, headers=headers).status_code == 401
    assert Escrow.objects.count() == 0


@pytest.mark.parametrize("age", [305, 3600, -305], ids=["just-stale", "an-hour-old", "from-the-future"])
def test_a_stale_signature_is_401_even_though_it_is_genuine(post_raw: Callable[..., Any], age: int) -> None:
    before = tables()
    body = json.dumps(slash(ALICE, "create", create_options(BOB), resolved_users=[BOB])).encode()

    response = post_raw(body, timestamp=int(time.time()) - age)

    assert response.status_code == 401
    assert tables() == before


def test_the_age_limit_is_a_setting(post_raw: Callable[..., Any], settings: Any) -> None:
    settings.DISCORD_SIGNATURE_MAX_AGE_SECONDS = 3600
    body = json.dumps({"id": "1400000000000000002", "application_id": "13", "type": 1}).encode()

    assert post_raw(body, timestamp=int(time.time()) - 1800).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"type": 2}',
        b'{"id": "1400000000000000003", "type": "2"}',
        b'{"id": "x", "type": 1}',
        b'{"id": "1400000000000000003", "type": 4, "token": "t", "data": {}}',
        json.dumps(
            {"id": "1400000000000000004", "application_id": "13", "type": 2, "token": "t", "data": {"name": "escrow"}}
        ).encode(),
        json.dumps(
            {
                "id": "1400000000000000005",
                "application_id": "13",
                "type": 2,
                "token": "t",
                "member": {"user": {"id": "alice"}},
                "data": {"name": "escrow"},
            }
        ).encode(),
        b"\xff\xfe",
    ],
    ids=["not-json", "array", "no-id", "type-string", "bad-id", "autocomplete", "no-user", "bad-user-id", "binary"],
)
def test_a_signed_but_malformed_body_is_400_and_changes_nothing(post_raw: Callable[..., Any], body: bytes) -> None:
    before = tables()

    response = post_raw(body)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_interaction"
    assert tables() == before


def test_an_unknown_command_gets_words_and_no_effect(post_raw: Callable[..., Any]) -> None:
    payload = slash(ALICE, "create", create_options(BOB), resolved_users=[BOB])
    payload["data"]["name"] = "trade"

    response = post_raw(json.dumps(payload).encode())

    assert response.status_code == 200
    assert response.json()["type"] == 4
    assert response.json()["data"]["flags"] == 64
    assert "don't know the command /trade" in response.json()["data"]["content"]
    assert Escrow.objects.count() == 0


def test_an_unknown_subcommand_gets_words_and_no_effect(post_raw: Callable[..., Any]) -> None:
    response = post_raw(json.dumps(slash(ALICE, "refund-me", [])).encode())

    assert response.status_code == 200
    assert "don't know /escrow refund-me" in response.json()["data"]["content"]
    assert Escrow.objects.count() == 0


def test_a_replayed_interaction_gets_the_same_answer_and_has_one_effect(post_raw: Callable[..., Any]) -> None:
    body = json.dumps(slash(ALICE, "create", create_options(BOB), resolved_users=[BOB])).encode()

    first = post_raw(body)
    after_first = tables()
    again = post_raw(body)  # Discord redelivers, or someone replays the captured request within the window

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert "State: **AWAIT_ACCEPTANCE**" in first.json()["data"]["content"]
    assert tables() == after_first
    assert Escrow.objects.count() == 1
