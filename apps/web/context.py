"""Template context for every page of the web app."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from apps.web.signin import sandbox_signin_enabled


def sandbox(request: HttpRequest) -> dict[str, Any]:
    return {"sandbox_banner": sandbox_signin_enabled()}
