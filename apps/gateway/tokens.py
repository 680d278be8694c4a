"""Access tokens for service accounts, scripts and the demo, minted the way allauth's headless JWT
strategy mints them on login: a server-side session, and a JWT bound to it. The session is recorded as one
of the user's sessions (allauth.usersessions), so signing out everywhere ends it and the token with it."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from allauth.headless.tokens.strategies.jwt import JWTTokenStrategy, internal
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import AbstractBaseUser

from apps.gateway import revocation
from apps.gateway.auth import ISSUED_US_CLAIM, STAFF_CLAIM, is_staff_member


def token_claims(user: AbstractBaseUser) -> dict[str, Any]:
    """What the API's authentication reads from a token instead of the database: the escrow-staff standing
    (a change of it revokes the user's tokens) and the issue time in microseconds (a revocation refuses the
    tokens issued before it, not those issued in the same second after it)."""
    return {STAFF_CLAIM: is_staff_member(user), ISSUED_US_CLAIM: revocation.now_us()}


class TokenStrategy(JWTTokenStrategy):
    """allauth's JWT strategy, with this project's claims in every access token it issues (sign-in and
    refresh)."""

    def get_claims(self, user: AbstractBaseUser) -> dict[str, Any]:
        return {**super().get_claims(user), **token_claims(user)}


def mint_access_token(user: AbstractBaseUser, *, expires_in: int | None = None) -> str:
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if expires_in:
        store.set_expiry(expires_in)
    store.save()
    UserSession.objects.create(user=user, session_key=store.session_key, ip="127.0.0.1", user_agent="mint_access_token")
    sid = internal.session_key_to_sid(store.session_key)
    claims = token_claims(user)
    token, _ = internal.create_token(
        "access",
        sub=str(user.pk),
        sid=sid,
        claims=claims,
        expires_in=expires_in or settings.HEADLESS_JWT_ACCESS_TOKEN_EXPIRES_IN,
    )
    return token
