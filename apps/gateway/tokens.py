"""Access tokens for service accounts, scripts and the demo, minted the way allauth's headless JWT
strategy mints them on login: a server-side session, and a JWT bound to it.

Revocation: sign-out ends the signing-out session (and so every token bound to it) and records the
moment in `TokenRevocation`; a token issued before that moment is refused whichever session it is bound
to. Tokens carry `issued_at` with sub-second precision (allauth's `iat` is whole seconds), so a token
minted in the same second after a sign-out still works."""

from __future__ import annotations

import time
from importlib import import_module
from typing import Any

from allauth.headless.tokens.strategies.jwt import JWTTokenStrategy, internal
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from apps.gateway.models import TokenRevocation

ISSUED_AT = "issued_at"


def _issued_claims() -> dict[str, Any]:
    return {ISSUED_AT: time.time()}


def mint_access_token(user: AbstractBaseUser, *, expires_in: int | None = None) -> str:
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if expires_in:
        store.set_expiry(expires_in)
    store.save()
    sid = internal.session_key_to_sid(store.session_key)
    token, _ = internal.create_token(
        "access",
        sub=str(user.pk),
        sid=sid,
        claims=_issued_claims(),
        expires_in=expires_in or settings.HEADLESS_JWT_ACCESS_TOKEN_EXPIRES_IN,
    )
    return token


def tokens_revoke(*, user_id: int) -> None:
    """Every token issued to this user until now stops working."""
    TokenRevocation.objects.update_or_create(user_id=user_id, defaults={"revoked_at": timezone.now()})


def token_revoked(*, user_id: Any, payload: dict[str, Any]) -> bool:
    revoked_at = TokenRevocation.objects.filter(user_id=user_id).values_list("revoked_at", flat=True).first()
    if revoked_at is None:
        return False
    issued = payload.get(ISSUED_AT, payload.get("iat"))
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        return True
    return issued <= revoked_at.timestamp()


class RevocableJWTTokenStrategy(JWTTokenStrategy):
    """allauth's JWT strategy (headless app clients under /_allauth/app/v1/), with `issued_at` in every
    access token and refresh refused for a token issued before the user signed out."""

    def get_claims(self, user: AbstractBaseUser) -> dict[str, Any]:
        return {**super().get_claims(user), **_issued_claims()}

    def refresh_token(self, refresh_token: str) -> tuple[str, str] | None:
        found = internal.validate_refresh_token(refresh_token)
        if found is not None and token_revoked(user_id=found[0].pk, payload=found[2]):
            return None
        return super().refresh_token(refresh_token)
