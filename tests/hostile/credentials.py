"""Bearer tokens a hostile or unlucky caller might present: expired, unsigned (alg=none), tampered,
or belonging to a user who has since been deactivated."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from allauth.headless.tokens.strategies.jwt import internal

from apps.gateway.tokens import mint_access_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def expired_token(user: Any) -> str:
    """Correctly signed, bound to a live session, but past its `exp`."""
    live = mint_access_token(user)
    claims = jwt.decode(live, options={"verify_signature": False})
    token, _ = internal.create_token("access", sub=str(user.pk), sid=claims["sid"], claims={}, expires_in=-120)
    return token


def alg_none_token(user: Any) -> str:
    """The claims of a valid token, re-sent with `alg: none` and no signature."""
    live = mint_access_token(user)
    claims = jwt.decode(live, options={"verify_signature": False})
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def tampered_token(user: Any, *, as_user: Any) -> str:
    """A valid token whose `sub` was edited to another user, keeping the original signature."""
    live = mint_access_token(user)
    header, _, signature = live.split(".")
    claims = jwt.decode(live, options={"verify_signature": False})
    claims["sub"] = str(as_user.pk)
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def deactivated_user_token(user: Any) -> str:
    """Minted while the user was active; the user is deactivated afterwards, through the model as the admin
    and allauth do (a bulk update sends no signal, so it would not revoke the user's tokens)."""
    token = mint_access_token(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    return token
