"""Rate limits on mutations: each caller (user, or client address when anonymous) may send at most
`API_THROTTLE_RATES["mutations"]` POST/PUT/PATCH/DELETE requests. Reads are not limited here.

Rates come from settings at request time (not from DRF's import-time copy), so an environment
variable or a test's settings override takes effect at once; a rate of None switches the limit off.
Counts live in the default cache, shared by every process (CACHE_URL: Redis, or the database's cache table).
An anonymous caller is counted by its address behind a trusted proxy (apps/gateway/client_address.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from apps.gateway.client_address import client_address

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class MutationRateThrottle(SimpleRateThrottle):
    scope = "mutations"

    def __init__(self) -> None:
        # SimpleRateThrottle reads its rate in __init__; ours is read per request in allow_request.
        pass

    def get_rate(self) -> str | None:
        return settings.API_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        user = getattr(request, "user", None)
        ident = f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{client_address(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
