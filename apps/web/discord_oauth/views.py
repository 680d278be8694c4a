from __future__ import annotations

from allauth.socialaccount.providers.discord.views import DiscordOAuth2Adapter as _DiscordOAuth2Adapter
from allauth.socialaccount.providers.oauth2.views import OAuth2CallbackView, OAuth2LoginView
from django.conf import settings


class DiscordOAuth2Adapter(_DiscordOAuth2Adapter):
    """allauth's Discord adapter with the endpoints read from settings at request time."""

    @property
    def access_token_url(self) -> str:
        return f"{settings.DISCORD_OAUTH_BASE}/oauth2/token"

    @property
    def authorize_url(self) -> str:
        return f"{settings.DISCORD_OAUTH_BASE}/oauth2/authorize"

    @property
    def profile_url(self) -> str:
        return f"{settings.DISCORD_OAUTH_BASE}/users/@me"


oauth2_login = OAuth2LoginView.adapter_view(DiscordOAuth2Adapter)
oauth2_callback = OAuth2CallbackView.adapter_view(DiscordOAuth2Adapter)
