"""Notifications tests talk to a fake Discord on a local HTTP server through discord.py's own client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from apps.notifications.models import DiscordLink
from tests.fakes.discord import FakeDiscord

BOT_TOKEN = "test-bot-token"
BUYER_DISCORD_ID = 310000000000000001
SELLER_DISCORD_ID = 310000000000000002


@pytest.fixture
def discord_server() -> Iterator[HTTPServer]:
    # Threaded: a send that times out must not stop the fake from answering the next one.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def fake_discord(discord_server: HTTPServer, settings: Any) -> FakeDiscord:
    fake = FakeDiscord(discord_server, token=BOT_TOKEN)
    settings.DISCORD_BOT_TOKEN = BOT_TOKEN
    settings.DISCORD_API_BASE = fake.base_url
    return fake


@pytest.fixture
def link_discord(api_client: Callable[..., Any]) -> Callable[[Any, int], None]:
    """link_discord(user, discord_id): given a user whose account knows their Discord id (as signing in with
    Discord, or a first Discord interaction, leaves it)."""

    def link(user: Any, discord_id: int) -> None:
        DiscordLink.objects.create(user=user, discord_user_id=discord_id)

    return link
