"""Rate limit on staff login attempts (the admin login form): per client address and per username, in a
window that starts at the first attempt, counted before the password is checked, so guessing is slow
whether or not it succeeds. Counters live in the shared default cache (CACHE_URL), so the limit holds across
processes; the address is the client's behind a trusted proxy (apps/gateway/client_address.py).
The API itself has no password login (tokens are minted by allauth's flows or `mint_token`)."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from apps.gateway.client_address import client_address


def _parse(rate: str) -> tuple[int, int]:
    count, _, period = rate.partition("/")
    seconds = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}[period or "min"]
    return int(count), seconds


class LoginRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rate = settings.LOGIN_RATE_LIMIT
        if rate and request.method == "POST" and request.path == reverse("admin:login"):
            limit, window = _parse(rate)
            username = (request.POST.get("username") or "")[:150].lower()
            keys = [f"login-rate:ip:{client_address(request)}"]
            if username:
                keys.append(f"login-rate:user:{username}")
            for key in keys:
                # The counter lives for one window from the first attempt, then starts again.
                cache.add(key, 0, timeout=window)
                try:
                    attempts = cache.incr(key)
                except ValueError:  # expired between add and incr: this is the first attempt again
                    cache.add(key, 1, timeout=window)
                    attempts = 1
                if attempts > limit:
                    response = HttpResponse(
                        "Too many login attempts. Try again later.\n",
                        status=429,
                        content_type="text/plain; charset=utf-8",
                    )
                    response["Retry-After"] = str(window)
                    return response
        return self.get_response(request)
