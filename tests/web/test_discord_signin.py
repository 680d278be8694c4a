"""Sign-in with Discord through allauth's Discord provider against a fake Discord OAuth2 server
(tests/fakes/discord_oauth.py): state and PKCE checked, a forged state refused, one account per Discord
id whichever door made it, a Discord account linked to someone else refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client
from pytest_httpserver import HTTPServer

from apps.notifications.public import DiscordLink, user_for_discord_id
from tests.factories import UserFactory
from tests.fakes.discord_oauth import CLIENT_ID, CLIENT_SECRET, DiscordPerson, FakeDiscordOAuth

pytestmark = pytest.mark.django_db(transaction=True)

ALICE = DiscordPerson(id="802931155219529748", username="alice_trades")


@pytest.fixture
def discord(settings: Any) -> Iterator[FakeDiscordOAuth]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    fake = FakeDiscordOAuth(server)
    settings.DISCORD_CLIENT_ID, settings.DISCORD_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.DISCORD_OAUTH_BASE = fake.base_url
    settings.SOCIALACCOUNT_PROVIDERS = {
        "discord": {
            **settings.SOCIALACCOUNT_PROVIDERS["discord"],
            "APPS": [{"client_id": CLIENT_ID, "secret": CLIENT_SECRET, "key": ""}],
        },
    }
    try:
        yield fake
    finally:
        server.clear()
        server.stop()


def start(client: Client, *, process: str = "login", callback_url: str = "/deals/") -> str:
    """The sign-in page's Discord button: a form post to allauth, which sends the browser to Discord."""
    client.get("/signin/")
    response = client.post(
        "/_allauth/browser/v1/auth/provider/redirect",
        {
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
            "provider": "discord",
            "process": process,
            "callback_url": callback_url,
        },
    )
    assert response.status_code == 302, response.content
    return response["Location"]


def at_discord(authorize_url: str) -> str:
    """The browser at Discord: the person approves, Discord sends it back to our callback."""
    answer = requests.get(authorize_url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    back = urlsplit(answer.headers["Location"])
    assert back.netloc == "testserver"
    return f"{back.path}?{back.query}"


def who(client: Client) -> str | None:
    response = client.get("/deals/")
    return response.context["user"].username if response.status_code == 200 else None


def sign_in(client: Client, discord: FakeDiscordOAuth, person: DiscordPerson) -> Any:
    discord.person = person
    return client.get(at_discord(start(client)))


def test_a_new_discord_user_gets_an_account_keyed_by_the_discord_id(discord: FakeDiscordOAuth) -> None:
    client = Client(enforce_csrf_checks=True)
    authorize_url = start(client)
    sent = parse_qs(urlsplit(authorize_url).query)
    assert authorize_url.startswith(discord.base_url + "/oauth2/authorize")
    assert sent["client_id"] == [CLIENT_ID] and sent["code_challenge_method"] == ["S256"]
    assert sent["state"][0] and sent["code_challenge"][0]

    discord.person = ALICE
    response = client.get(at_discord(authorize_url))
    assert response.status_code == 302 and response["Location"] == "/deals/"
    assert who(client) == "alice_trades"
    link = DiscordLink.objects.get(discord_user_id=int(ALICE.id))
    assert link.user.username == "alice_trades" and not link.user.has_usable_password()
    # the token request proved possession of the PKCE verifier, and nothing was refused
    assert discord.token_requests[-1]["code_verifier"] and discord.token_refusals == []

    # signing in again is the same account
    again = Client(enforce_csrf_checks=True)
    sign_in(again, discord, ALICE)
    assert who(again) == "alice_trades"
    assert get_user_model().objects.count() == 1


def test_an_account_made_by_the_bot_or_a_deal_is_the_one_discord_signs_in_to(discord: FakeDiscordOAuth) -> None:
    # a deal named discord:<id> (or the bot saw this id) before the person ever signed in
    made_earlier = user_for_discord_id(discord_user_id=int(ALICE.id), username_hint="named_in_a_deal")
    client = Client(enforce_csrf_checks=True)
    sign_in(client, discord, ALICE)
    assert who(client) == made_earlier.username == "named_in_a_deal"
    assert get_user_model().objects.count() == 1


def test_a_forged_state_is_refused_and_no_code_is_exchanged(discord: FakeDiscordOAuth) -> None:
    client = Client(enforce_csrf_checks=True)
    discord.person = ALICE
    callback = at_discord(start(client))
    forged = callback.replace("state=", "state=forged", 1)
    response = client.get(forged)
    assert response.status_code == 302 and "/signin/?error=" in response["Location"]
    assert who(client) is None
    assert discord.token_requests == []
    assert not DiscordLink.objects.exists()
    # a callback with no state at all, or a state from another browser, fares no better
    other = Client(enforce_csrf_checks=True)
    assert other.get(callback).status_code == 302 and who(other) is None
    assert get_user_model().objects.count() == 0
    # the refusal is shown in words on the sign-in page
    refused = urlsplit(response["Location"])
    page = client.get(f"{refused.path}?{refused.query}", follow=True)
    assert "Sign-in with Discord failed" in page.content.decode()


def test_a_code_is_exchanged_once(discord: FakeDiscordOAuth) -> None:
    client = Client(enforce_csrf_checks=True)
    discord.person = ALICE
    callback = at_discord(start(client))
    assert client.get(callback).status_code == 302 and who(client) == "alice_trades"
    # replaying the callback: allauth has spent its state, and Discord would refuse the code too
    replay = Client(enforce_csrf_checks=True)
    replay.get(callback)
    assert who(replay) is None


def test_cancelling_at_discord_signs_no_one_in(discord: FakeDiscordOAuth) -> None:
    client = Client(enforce_csrf_checks=True)
    discord.deny = True
    response = client.get(at_discord(start(client)))
    assert response.status_code == 302 and "error=cancelled" in response["Location"]
    assert who(client) is None and get_user_model().objects.count() == 0


def test_linking_a_discord_account_already_linked_to_someone_else_is_refused(discord: FakeDiscordOAuth) -> None:
    owner = user_for_discord_id(discord_user_id=int(ALICE.id), username_hint="alice_owner")
    mallory = UserFactory(username="mallory")
    client = Client(enforce_csrf_checks=True)
    client.force_login(mallory)
    discord.person = ALICE
    response = client.get(at_discord(start(client, process="connect", callback_url="/settings/notifications")))
    assert response.status_code == 302 and "error=" in response["Location"]
    assert DiscordLink.objects.get(discord_user_id=int(ALICE.id)).user_id == owner.pk
    assert not DiscordLink.objects.filter(user_id=mallory.pk).exists()


def test_linking_a_new_discord_account_from_notification_settings(discord: FakeDiscordOAuth) -> None:
    person = UserFactory(username="web_first")
    client = Client(enforce_csrf_checks=True)
    client.force_login(person)
    discord.person = DiscordPerson(id="902931155219529749", username="webfirst")
    response = client.get(at_discord(start(client, process="connect", callback_url="/settings/notifications")))
    assert response.status_code == 302 and response["Location"] == "/settings/notifications"
    assert DiscordLink.objects.get(user_id=person.pk).discord_user_id == 902931155219529749
    assert 'id="discord-linked"' in client.get("/settings/notifications").content.decode()


def test_a_staff_account_does_not_sign_in_through_discord(discord: FakeDiscordOAuth) -> None:
    staff = user_for_discord_id(discord_user_id=int(ALICE.id), username_hint="staff_alice")
    staff.is_staff = True
    staff.save()
    client = Client(enforce_csrf_checks=True)
    response = sign_in(client, discord, ALICE)
    assert response.status_code == 302 and "error=" in response["Location"]
    assert who(client) is None


def test_without_credentials_there_is_no_discord_button_and_the_redirect_is_refused(settings: Any) -> None:
    settings.DISCORD_CLIENT_ID = settings.DISCORD_CLIENT_SECRET = ""
    client = Client(enforce_csrf_checks=True)
    assert 'id="signin-discord"' not in client.get("/signin/").content.decode()
    response = client.post(
        "/_allauth/browser/v1/auth/provider/redirect",
        {
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
            "provider": "discord",
            "process": "login",
            "callback_url": "/deals/",
        },
    )
    assert response.status_code != 302 or "discord" not in response.get("Location", "")
