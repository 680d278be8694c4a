"""`manage.py discord_commands sync` registers the slash commands with Discord; `show` prints them."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.discord.commands import COMMANDS
from apps.discord.rest import DiscordUnavailable, register_commands


class Command(BaseCommand):
    help = "Register the /escrow slash commands with Discord (sync), or print them (show)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=["sync", "show"])

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "show":
            self.stdout.write(json.dumps(COMMANDS, indent=2))
            return
        if not settings.DISCORD_APPLICATION_ID or not settings.DISCORD_BOT_TOKEN:
            raise CommandError("set DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN first")
        try:
            registered = register_commands(application_id=settings.DISCORD_APPLICATION_ID, commands=COMMANDS)
        except DiscordUnavailable as exc:
            raise CommandError(f"registration failed: {exc}") from exc
        for command in registered:
            self.stdout.write(f"registered /{command['name']} (id {command.get('id', '?')})")
