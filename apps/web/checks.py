"""`manage.py check --deploy` reports a sandbox sign-in left switched on."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def sandbox_signin_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if not settings.SANDBOX_SIGNIN:
        return []
    return [
        Error(
            "The sandbox sign-in is switched on (SANDBOX_SIGNIN): anyone could sign in as any non-staff user "
            "without a password. It is refused at run time when HTTPS=1 or PAYMENTS_PROVIDER=live.",
            hint="Set SANDBOX_SIGNIN=0 (its default whenever HTTPS=1 or PAYMENTS_PROVIDER=live).",
            id="web.E001",
        )
    ]
