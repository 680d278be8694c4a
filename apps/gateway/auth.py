"""Bearer JWT authentication (django-allauth headless JWT strategy) and the caller's roles."""

from __future__ import annotations

from typing import Any

from allauth.headless.contrib.rest_framework.authentication import JWTTokenAuthentication
from django.contrib.auth.models import AbstractBaseUser
from rest_framework.exceptions import AuthenticationFailed

STAFF_GROUPS = ("dispute_agent", "ops")


class BearerJWTAuthentication(JWTTokenAuthentication):
    """allauth's JWT authentication (signature, expiry, token use and, statefully, the session), plus a
    refusal of deactivated users even for a token minted before they were deactivated."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        user, payload = super().authenticate_credentials(key)
        if not getattr(user, "is_active", False):
            raise AuthenticationFailed("Invalid token.")
        return user, payload

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


def is_staff_member(user: AbstractBaseUser) -> bool:
    """Staff for escrow purposes: a Django staff user in the dispute_agent or ops group."""
    if not getattr(user, "is_staff", False):
        return False
    return user.groups.filter(name__in=STAFF_GROUPS).exists()
