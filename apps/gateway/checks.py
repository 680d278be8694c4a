"""`manage.py check --deploy` reports a metrics endpoint left without its token."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def metrics_token_check(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if settings.METRICS_TOKEN:
        return []
    return [
        Warning(
            "METRICS_TOKEN is not set: /api/v1/metrics answers any client on this host, which behind a "
            "reverse proxy on the same host means anyone.",
            hint="Set METRICS_TOKEN and give Prometheus the same value as its bearer token.",
            id="gateway.W001",
        )
    ]
