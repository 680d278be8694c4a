"""Runs the Discord bot: `/escrow` slash commands that act through the REST API as the linked user.

    DISCORD_BOT_TOKEN=... manage.py run_discord_bot [--api-base http://127.0.0.1:8000/api/v1] [--guild ID]

`--guild` syncs the commands to one server at once (global commands take up to an hour to appear)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import discord
from discord import app_commands
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.notifications.bot import EscrowBot
from apps.notifications.delivery import discord_api_base


def build_client(bot: EscrowBot, *, guild_id: int | None) -> discord.Client:
    client = discord.Client(intents=discord.Intents(guilds=True))
    tree = app_commands.CommandTree(client)
    group = app_commands.Group(name="escrow", description="Escrow trades held until delivery")

    async def reply(interaction: discord.Interaction, handler: Any, **kwargs: Any) -> None:
        # Handlers touch the database and call the API: run them off the event loop.
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await asyncio.to_thread(functools.partial(handler, discord_user_id=interaction.user.id, **kwargs))
        await interaction.followup.send(text[:2000], ephemeral=True)

    @group.command(name="link", description="Link this Discord account to your escrow account")
    async def link(interaction: discord.Interaction) -> None:
        await reply(interaction, bot.link)

    @group.command(name="create", description="Open an escrow as the buyer")
    async def create(interaction: discord.Interaction, seller: str, amount: str, description: str,
                     currency: str = "USD") -> None:
        await reply(interaction, bot.create, request_id=str(interaction.id), seller=seller, amount=amount,
                    currency=currency, description=description)

    @group.command(name="status", description="Show an escrow")
    async def status(interaction: discord.Interaction, escrow_id: str) -> None:
        await reply(interaction, bot.status, escrow_id=escrow_id)

    @group.command(name="list", description="Your escrows")
    async def list_(interaction: discord.Interaction, state: str | None = None) -> None:
        await reply(interaction, bot.list_escrows, state=state)

    @group.command(name="deliver", description="Mark an escrow delivered (seller)")
    async def deliver(interaction: discord.Interaction, escrow_id: str) -> None:
        await reply(interaction, bot.deliver, request_id=str(interaction.id), escrow_id=escrow_id)

    @group.command(name="release", description="Release the funds to the seller (buyer)")
    async def release(interaction: discord.Interaction, escrow_id: str) -> None:
        await reply(interaction, bot.release, request_id=str(interaction.id), escrow_id=escrow_id)

    @group.command(name="dispute", description="Open a dispute")
    async def dispute(interaction: discord.Interaction, escrow_id: str, reason: str) -> None:
        await reply(interaction, bot.dispute, request_id=str(interaction.id), escrow_id=escrow_id, reason=reason)

    tree.add_command(group)

    @client.event
    async def setup_hook() -> None:
        guild = discord.Object(id=guild_id) if guild_id else None
        if guild is not None:
            tree.copy_global_to(guild=guild)
        await tree.sync(guild=guild)

    return client


class Command(BaseCommand):
    help = "Run the Discord bot (/escrow slash commands acting through the REST API)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--api-base", default=f"{settings.PUBLIC_BASE_URL}/api/v1")
        parser.add_argument("--guild", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DISCORD_BOT_TOKEN:
            raise CommandError("set DISCORD_BOT_TOKEN")
        discord_api_base()
        client = build_client(EscrowBot(api_base=options["api_base"]), guild_id=options["guild"])
        client.run(settings.DISCORD_BOT_TOKEN, log_handler=None)
