from __future__ import annotations

from allauth.socialaccount.providers.discord.provider import DiscordProvider as _DiscordProvider

from apps.web.discord_oauth.views import DiscordOAuth2Adapter


class DiscordProvider(_DiscordProvider):
    oauth2_adapter_class = DiscordOAuth2Adapter

    def extract_common_fields(self, data: dict) -> dict:
        # The Discord id is the identity; an email from Discord is neither needed nor kept.
        return {"username": data.get("username")}

    def extract_email_addresses(self, data: dict) -> list:
        return []


provider_classes = [DiscordProvider]
