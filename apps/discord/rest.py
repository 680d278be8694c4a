"""Calls from the edge to Discord's REST API: the interaction webhook (follow-ups need no bot token,
the interaction token is the credential) and command registration (the bot token). DISCORD_API_BASE
points it at a local fake in tests."""

from __future__ import annotations

from typing import Any

import httpx
from django.conf import settings

DEFAULT_API_BASE = "https://discord.com/api/v10"


class DiscordUnavailable(Exception):
    pass


def api_base() -> str:
    return (settings.DISCORD_API_BASE or DEFAULT_API_BASE).rstrip("/")


def _client() -> httpx.Client:
    return httpx.Client(
        base_url=api_base(),
        timeout=settings.DISCORD_HTTP_TIMEOUT_SECONDS,
        headers={"User-Agent": "DiscordBot (escrow, 1)"},
    )


def edit_original_response(*, application_id: str, token: str, data: dict[str, Any]) -> httpx.Response:
    """`PATCH /webhooks/{application_id}/{token}/messages/@original`: the deferred answer."""
    body = {key: data[key] for key in ("content", "components", "allowed_mentions") if key in data}
    try:
        with _client() as client:
            return client.patch(f"/webhooks/{application_id}/{token}/messages/@original", json=body)
    except httpx.HTTPError as exc:
        raise DiscordUnavailable(f"{type(exc).__name__}: {exc}") from exc


def register_commands(*, application_id: str, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`PUT /applications/{application_id}/commands`: replaces the application's global commands with
    these (Discord's bulk overwrite: unchanged ones keep their ids, missing ones are deleted)."""
    try:
        with _client() as client:
            response = client.put(
                f"/applications/{application_id}/commands",
                json=commands,
                headers={"Authorization": f"Bot {settings.DISCORD_BOT_TOKEN}"},
            )
    except httpx.HTTPError as exc:
        raise DiscordUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise DiscordUnavailable(f"Discord answered {response.status_code}: {response.text[:300]}")
    return response.json()
