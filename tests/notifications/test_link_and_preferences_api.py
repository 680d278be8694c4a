"""Linking a Discord account and choosing which messages to receive, through the API. Refused input is
a precise problem+json and changes nothing."""

from __future__ import annotations

import datetime

from django.utils import timezone

from apps.notifications.models import DiscordLink, DiscordLinkCode, Notification, NotificationPreference
from apps.notifications.services import link_code_issue
from tests.helpers import create_escrow
from tests.notifications.conftest import BUYER_DISCORD_ID, SELLER_DISCORD_ID

LINK = "/api/v1/me/discord-link"
PREFS = "/api/v1/me/notification-preferences"


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    return body


def test_link_with_a_one_time_code(api_client, buyer, fake_discord):
    client = api_client(buyer)
    assert client.get(LINK).json() == {"linked": False, "discord_user_id": None, "linked_at": None}

    code = link_code_issue(discord_user_id=BUYER_DISCORD_ID)
    response = client.put(LINK, {"code": code.lower()}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["discord_user_id"] == str(BUYER_DISCORD_ID)
    assert DiscordLink.objects.get(user=buyer).discord_user_id == BUYER_DISCORD_ID
    # Only the code's hash is stored.
    assert not DiscordLinkCode.objects.filter(code_hash__icontains=code.replace("-", "")).exists()
    # A security DM tells the account holder.
    assert "now linked" in fake_discord.dms_to(BUYER_DISCORD_ID)[0]
    # Redeeming the same code again is a no-op, not a second link message.
    assert client.put(LINK, {"code": code}, format="json").status_code == 200
    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 1


def test_bad_codes_are_refused_and_change_nothing(api_client, buyer, seller, fake_discord):
    client = api_client(buyer)
    expired = link_code_issue(discord_user_id=BUYER_DISCORD_ID)
    DiscordLinkCode.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    used = link_code_issue(discord_user_id=SELLER_DISCORD_ID)
    assert api_client(seller).put(LINK, {"code": used}, format="json").status_code == 200
    before = (DiscordLink.objects.count(), Notification.objects.count(), len(fake_discord.sent))

    body = _problem(client.put(LINK, {"code": "NOPE-NOPE1"}, format="json"), 400, "invalid_link_code")
    assert body["errors"] == [{"field": "code", "detail": body["detail"]}]
    _problem(client.put(LINK, {"code": expired}, format="json"), 400, "invalid_link_code")
    _problem(client.put(LINK, {"code": used}, format="json"), 400, "invalid_link_code")
    _problem(client.put(LINK, {"code": 12345}, format="json"), 400, "validation_error")
    _problem(client.put(LINK, {"code": used, "discord_user_id": 1}, format="json"), 400, "validation_error")
    _problem(client.put(LINK, {}, format="json"), 400, "validation_error")
    _problem(api_client().put(LINK, {"code": used}, format="json"), 401, "not_authenticated")

    assert (DiscordLink.objects.count(), Notification.objects.count(), len(fake_discord.sent)) == before
    assert not DiscordLink.objects.filter(user=buyer).exists()


def test_a_discord_account_belongs_to_one_user(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(seller, SELLER_DISCORD_ID)
    code = link_code_issue(discord_user_id=SELLER_DISCORD_ID)

    _problem(api_client(buyer).put(LINK, {"code": code}, format="json"), 409, "discord_account_linked_elsewhere")

    assert not DiscordLink.objects.filter(user=buyer).exists()
    assert DiscordLinkCode.objects.get(code_hash__isnull=False, used_at__isnull=True).discord_user_id == SELLER_DISCORD_ID


def test_unlinked_user_gets_no_more_dms(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    assert api_client(buyer).delete(LINK).status_code == 204

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each

    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 1  # only the link message
    assert Notification.objects.get(user_id=buyer.pk, kind="escrow_created").status == Notification.Status.SKIPPED


def test_optional_messages_can_be_muted_money_messages_cannot(api_client, buyer, seller, fake_discord,
                                                             link_discord):
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
    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 1


def test_locked_unknown_and_malformed_preference_changes_are_refused(api_client, buyer):
    client = api_client(buyer)

    body = _problem(client.patch(PREFS, {"escrow_created": False, "released": False}, format="json"), 400,
                    "preference_locked")
    assert body["errors"][0]["field"] == "released"
    assert _problem(client.patch(PREFS, {"nope": True}, format="json"), 400,
                    "unknown_notification_kind")["errors"][0]["field"] == "nope"
    assert _problem(client.patch(PREFS, {"disputed": "no"}, format="json"), 400,
                    "validation_error")["errors"] == [{"field": "disputed", "detail": "must be true or false"}]
    _problem(client.patch(PREFS, [], format="json"), 400, "validation_error")
    _problem(client.patch(PREFS, {}, format="json"), 400, "validation_error")

    # All or nothing: the valid half of the first request did not apply either.
    assert not NotificationPreference.objects.exists()
