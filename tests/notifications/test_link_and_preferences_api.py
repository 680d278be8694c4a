"""Linking a Discord account and choosing which messages to receive, through the API. Refused input is
a precise problem+json and changes nothing."""

from __future__ import annotations

import pytest

from apps.notifications.models import DiscordLink, Notification, NotificationPreference
from tests.helpers import create_escrow
from tests.notifications.conftest import BUYER_DISCORD_ID

LINK = "/api/v1/me/discord-link"
PREFS = "/api/v1/me/notification-preferences"


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    return body


def test_the_link_is_shown_and_there_is_no_code_flow_any_more(api_client, buyer, link_discord):
    client = api_client(buyer)
    assert client.get(LINK).json() == {"linked": False, "discord_user_id": None, "linked_at": None}

    link_discord(buyer, BUYER_DISCORD_ID)

    body = client.get(LINK).json()
    assert body["linked"] is True and body["discord_user_id"] == str(BUYER_DISCORD_ID)
    # A Discord account is linked by Discord vouching for it (sign-in, a signed interaction), never by a code.
    _problem(client.put(LINK, {"code": "ABCDE-FGHJK"}, format="json"), 405, "method_not_allowed")
    assert DiscordLink.objects.get(user=buyer).discord_user_id == BUYER_DISCORD_ID


def test_unlinked_user_gets_no_more_dms(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    assert api_client(buyer).delete(LINK).status_code == 204

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each

    assert fake_discord.dms_to(BUYER_DISCORD_ID) == []
    assert Notification.objects.get(user_id=buyer.pk, kind="escrow_created").status == Notification.Status.SKIPPED


def test_optional_messages_can_be_muted_money_messages_cannot(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    client = api_client(buyer)
    prefs = {p["kind"]: p for p in client.get(PREFS).json()["preferences"]}
    assert prefs["escrow_created"] == {**prefs["escrow_created"], "enabled": True, "locked": False}
    assert prefs["released"]["locked"] is True

    response = client.patch(PREFS, {"escrow_created": False}, format="json")
    assert response.status_code == 200, response.content
    assert {p["kind"]: p["enabled"] for p in response.json()["preferences"]}["escrow_created"] is False

    create_escrow(client, seller=seller, accept=False)
    muted = Notification.objects.get(user_id=buyer.pk, kind="escrow_created")
    assert muted.status == Notification.Status.SKIPPED
    assert "muted" in muted.delivery_attempts.get().detail
    assert fake_discord.dms_to(BUYER_DISCORD_ID) == []


def test_locked_unknown_and_malformed_preference_changes_are_refused(api_client, buyer):
    client = api_client(buyer)

    body = _problem(
        client.patch(PREFS, {"escrow_created": False, "released": False}, format="json"), 400, "preference_locked"
    )
    assert body["errors"][0]["field"] == "released"
    assert (
        _problem(client.patch(PREFS, {"nope": True}, format="json"), 400, "unknown_notification_kind")["errors"][0][
            "field"
        ]
        == "nope"
    )
    assert _problem(client.patch(PREFS, {"disputed": "no"}, format="json"), 400, "validation_error")["errors"] == [
        {"field": "disputed", "detail": "must be true or false"}
    ]
    _problem(client.patch(PREFS, [], format="json"), 400, "validation_error")
    _problem(client.patch(PREFS, {}, format="json"), 400, "validation_error")

    # All or nothing: the valid half of the first request did not apply either.
    assert not NotificationPreference.objects.exists()


def test_linking_a_discord_account_discord_vouched_for_tells_the_owner_once(buyer, seller, fake_discord):
    from apps.notifications.public import NotificationError, discord_link_set

    discord_link_set(user_id=buyer.pk, discord_user_id=BUYER_DISCORD_ID)
    discord_link_set(user_id=buyer.pk, discord_user_id=BUYER_DISCORD_ID)  # again: a no-op

    assert DiscordLink.objects.get(user=buyer).discord_user_id == BUYER_DISCORD_ID
    [dm] = fake_discord.dms_to(BUYER_DISCORD_ID)
    assert "now linked" in dm
    # Never re-pointed: the same Discord account for another user is refused, and nothing changes.
    with pytest.raises(NotificationError) as refused:
        discord_link_set(user_id=seller.pk, discord_user_id=BUYER_DISCORD_ID)
    assert refused.value.code == "discord_account_linked_elsewhere"
    assert not DiscordLink.objects.filter(user=seller).exists()
    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 1
