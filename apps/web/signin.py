"""How people sign in to the web app: with Discord (allauth's provider, the account keyed by the Discord
user id through the notifications service), or, in the embedded default only, the sandbox sign-in.

Staff accounts never sign in here: the admin's own login asks them for a second factor, and a session
made here would carry their staff flag past it."""

from __future__ import annotations

import re
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from apps.notifications import public as notifications

_SNOWFLAKE = re.compile(r"^[1-9][0-9]{0,19}$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,30}$")
SANDBOX_LIST_LIMIT = 20


def _discord_id(uid: str) -> int:
    if not _SNOWFLAKE.match(uid or ""):
        raise PermissionDenied("Discord answered with an id that is not a snowflake")
    return int(uid)


def _refuse_staff(user: Any) -> None:
    if user.is_staff or user.is_superuser:
        raise PermissionDenied("staff sign in at /admin/ with their second factor")


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """One account per Discord id, whichever door it came through: a Discord sign-in, a deal naming
    `discord:<id>`, or a Discord interaction all resolve through `user_for_discord_id`, which never re-points a
    linked id."""

    def pre_social_login(self, request: HttpRequest, sociallogin: Any) -> None:
        discord_user_id = _discord_id(sociallogin.account.uid)
        link = notifications.DiscordLink.objects.filter(discord_user_id=discord_user_id).first()
        if sociallogin.state.get("process") == "connect":
            # A signed-in person links their Discord account (notification settings).
            if link is not None and link.user_id != request.user.pk:
                raise PermissionDenied("this Discord account is already linked to another account")
            if sociallogin.is_existing and sociallogin.user.pk != request.user.pk:
                raise PermissionDenied("this Discord account is already linked to another account")
            if link is None:
                try:
                    notifications.discord_link_set(
                        user_id=int(request.user.pk),  # type: ignore[arg-type]
                        discord_user_id=discord_user_id,
                    )
                except notifications.NotificationError as exc:
                    raise PermissionDenied(exc.detail) from None
            return
        if sociallogin.is_existing:
            if link is not None and link.user_id != sociallogin.user.pk:
                raise PermissionDenied("this Discord account is linked to another account")
            _refuse_staff(sociallogin.user)
            return
        user = notifications.user_for_discord_id(
            discord_user_id=discord_user_id, username_hint=str(sociallogin.account.extra_data.get("username") or "")
        )
        if not user.is_active:
            raise PermissionDenied("this account is deactivated")
        _refuse_staff(user)
        sociallogin.connect(request, user)

    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        # Accounts are made by user_for_discord_id (above), never by allauth's signup form.
        return False


def discord_signin_enabled() -> bool:
    return bool(settings.DISCORD_CLIENT_ID and settings.DISCORD_CLIENT_SECRET)


# --- the sandbox sign-in ---------------------------------------------------------------------------


class SandboxSigninRefused(Exception):
    pass


def sandbox_signin_enabled() -> bool:
    """On for `make run`; never in a production configuration, whatever SANDBOX_SIGNIN says."""
    return bool(settings.SANDBOX_SIGNIN) and not sandbox_refused_by_configuration()


def sandbox_refused_by_configuration() -> bool:
    return bool(settings.HTTPS) or settings.PAYMENTS_PROVIDER == "live"


def sandbox_users() -> list[Any]:
    """The people one may pick on the sandbox sign-in page: active, not staff, newest first."""
    users = get_user_model().objects.filter(is_active=True, is_staff=False, is_superuser=False)
    return list(users.order_by("-date_joined", "-pk")[:SANDBOX_LIST_LIMIT])


def sandbox_user_pick(*, user_id: str) -> Any:
    if not sandbox_signin_enabled():
        raise SandboxSigninRefused("the sandbox sign-in is off in this deployment")
    if not (user_id or "").isascii() or not user_id.isdigit():
        raise SandboxSigninRefused("pick one of the listed people")
    user = get_user_model().objects.filter(pk=int(user_id), is_active=True).first()
    if user is None or user.is_staff or user.is_superuser:
        raise SandboxSigninRefused("pick one of the listed people")
    return user


def sandbox_user_create(*, username: str) -> Any:
    if not sandbox_signin_enabled():
        raise SandboxSigninRefused("the sandbox sign-in is off in this deployment")
    if not _USERNAME.match(username or ""):
        raise SandboxSigninRefused("a name is 3 to 30 letters, digits, dots, dashes or underscores")
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise SandboxSigninRefused(f"{username} is taken; pick them from the list or choose another name")
    return User.objects.create_user(username=username, password=None)


# --- signing out ------------------------------------------------------------------------------------


def sessions_record(request: HttpRequest) -> None:
    """Counts this browser session among the user's sessions (allauth's own sign-ins do this themselves)."""
    UserSession.objects.create_from_request(request)


def sessions_end_all(*, user_id: int) -> int:
    """Sign-out everywhere: every recorded session of the user ends, and with it every access and refresh
    token bound to one (tokens are validated statefully against their session)."""
    ended = 0
    for session in UserSession.objects.filter(user_id=user_id).iterator():
        session.end()
        ended += 1
    return ended
