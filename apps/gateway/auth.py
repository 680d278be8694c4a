"""Bearer JWT authentication (django-allauth's headless JWT tokens) and the caller's roles.

A request's token is checked with no database query: the signature and the claims (expiry, token use,
subject, session), then the revocations in the shared cache (apps/gateway/revocation.py). The caller is
a `TokenUser`: its id and its escrow-staff standing come from the token; any other attribute loads the
user row on first use (the few views that need it pay for it, the read path does not).

allauth's own endpoints (`/_allauth/...`: refresh, sign-out) still validate tokens against their session.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from allauth.headless.contrib.rest_framework.authentication import JWTTokenAuthentication
from allauth.headless.tokens.strategies.jwt import internal
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.utils.functional import SimpleLazyObject
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated

from apps.gateway import revocation
from apps.gateway.problems import Problem, database_unavailable, unavailable_problem

STAFF_GROUPS = ("dispute_agent", "ops")
# Claims this project adds to the access tokens it issues (apps/gateway/tokens.py).
STAFF_CLAIM = "escrow_staff"
ISSUED_US_CLAIM = "iat_us"

log = logging.getLogger(__name__)


class TokenUser(SimpleLazyObject):
    """The authenticated caller as the token describes it. `pk`, `is_authenticated`, `is_active` and the
    escrow-staff standing need no query; anything else loads the user row once."""

    def __init__(self, pk: int, *, escrow_staff: bool | None) -> None:
        model = get_user_model()
        super().__init__(lambda: model._default_manager.get(pk=pk))
        self.__dict__["_token_pk"] = pk
        self.__dict__["_token_staff"] = escrow_staff

    @property
    def pk(self) -> int:
        return int(self.__dict__["_token_pk"])

    @property
    def id(self) -> int:
        return int(self.__dict__["_token_pk"])

    @property
    def escrow_staff(self) -> bool | None:
        return self.__dict__["_token_staff"]

    # A revoked or deactivated user's token never gets this far.
    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class _Verified:
    """What a token's signature and claims say, once checked."""

    user_pk: int
    expires_at: int
    lifetime: int
    session_key: str
    issued_us: int
    staff: bool | None
    payload: dict[str, Any]


# Tokens whose signature and claims were checked, by the token's text: a client sends the same token for
# up to its 15 minutes, and the check (the signature, the claims' parsing, the session id's decryption) is
# the same every time. Only successes are kept (a refusal may depend on the clock: a token issued a moment
# "in the future" by another host's clock); expiry is checked again on every use, and the lifetime limit and
# the revocations are read on every request as before. Emptied when full and when settings change (tests).
_VERIFIED_MAX = 4096
_verified: dict[str, _Verified] = {}


def _forget_verified(**kwargs: Any) -> None:
    _verified.clear()


setting_changed.connect(_forget_verified, dispatch_uid="gateway.auth.forget_verified")


def _verify(key: str) -> _Verified:
    found = _verified.get(key)
    if found is not None:
        if found.expires_at > time.time():  # PyJWT's own rule: expired once exp <= now
            return found
        _verified.pop(key, None)
        raise AuthenticationFailed("Invalid token.")
    payload = internal.decode_token(key, "access")  # signature, exp, token_use, jti/sub/sid present
    if payload is None:
        raise AuthenticationFailed("Invalid token.")
    try:
        user_pk = int(payload["sub"])
        issued_at = int(payload["iat"])
        expires_at = int(payload["exp"])
    except (KeyError, TypeError, ValueError):
        raise AuthenticationFailed("Invalid token.") from None
    session_key = internal.session_key_from_sid(payload["sid"])
    if not session_key:
        raise AuthenticationFailed("Invalid token.")
    issued_us = payload.get(ISSUED_US_CLAIM)
    if not isinstance(issued_us, int):
        # Issued without the precise time: as if at the end of its second, so a revocation in that
        # second covers it.
        issued_us = issued_at * 1_000_000 + 999_999
    staff = payload.get(STAFF_CLAIM)
    verified = _Verified(
        user_pk=user_pk,
        expires_at=expires_at,
        lifetime=expires_at - issued_at,
        session_key=session_key,
        issued_us=issued_us,
        staff=staff if isinstance(staff, bool) else None,
        payload=payload,
    )
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[key] = verified
    return verified


class BearerJWTAuthentication(JWTTokenAuthentication):
    """Stateless validation of allauth's access tokens, with revocation from the shared cache."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        verified = _verify(key)
        if verified.lifetime > settings.AUTH_TOKEN_MAX_LIFETIME_SECONDS:
            # Longer than a revocation is remembered: it could outlive its own revocation.
            raise AuthenticationFailed("Invalid token.")
        try:
            revoked = revocation.is_revoked(
                user_id=verified.user_pk, session_key=verified.session_key, issued_us=verified.issued_us
            )
        except Exception as exc:  # noqa: BLE001 - fail closed, never fall back to a database query
            log.error("token revocation check failed", extra={"error": type(exc).__name__})
            if database_unavailable(exc):
                # The shared cache is the database's cache table (the embedded default) and the database
                # is gone: say so, as every other request does.
                raise unavailable_problem() from None
            raise Problem(503, "auth_unavailable", "sign-in cannot be checked right now; retry shortly") from None
        if revoked:
            raise AuthenticationFailed("Invalid token.")
        return TokenUser(verified.user_pk, escrow_staff=verified.staff), verified.payload

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


def caller_id(request: Any) -> int:
    """The id of the authenticated caller (every view but the public ones requires authentication)."""
    pk = request.user.pk
    if pk is None:
        raise NotAuthenticated()
    return int(pk)


def is_staff_member(user: Any) -> bool:
    """Staff for escrow purposes: a Django staff user in the dispute_agent or ops group. For a caller
    authenticated by token, the token says (a change of either revokes the user's tokens)."""
    if isinstance(user, TokenUser) and user.escrow_staff is not None:
        return user.escrow_staff
    if not getattr(user, "is_staff", False):
        return False
    return bool(user.groups.filter(name__in=STAFF_GROUPS).exists())
