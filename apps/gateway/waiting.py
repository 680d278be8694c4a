"""Waiting is the client's choice, never the default: no request holds a worker unless it asked to.

- A command's 202 carries the escrow's new `state` and `version` from the command's own transaction.
- `Prefer: wait=N` (RFC 7240) on a command: the 202 is sent once the read model shows that version (or
  after N seconds); on `GET /escrows/{id}`: the answer waits until `?min_version=` is reached, the escrow
  appears, or (with `If-None-Match`) it changes. N is capped by PREFER_WAIT_MAX_SECONDS; the answer names
  the wait it applied in `Preference-Applied: wait=<seconds>`.
- Without it, a read names what it needs: `?min_version=N` (412 `version_not_reached` with `Retry-After`
  while the read model is behind) or `If-None-Match` (304 while unchanged).
"""

from __future__ import annotations

import re

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

_WAIT = re.compile(r"^\s*wait\s*=\s*\"?([0-9]{1,9})\"?\s*$", re.IGNORECASE)


def requested_wait(request: Request) -> float | None:
    """The seconds the client asked to wait (`Prefer: wait=N`, capped), or None if it did not ask. A
    preference the server does not understand is ignored, as RFC 7240 says."""
    header = request.headers.get("Prefer")
    if not header:
        return None
    for preference in header.split(","):
        match = _WAIT.match(preference.split(";", 1)[0])
        if match:
            return min(float(match.group(1)), float(settings.PREFER_WAIT_MAX_SECONDS))
    return None


def applied(response: Response, seconds: float) -> Response:
    response["Preference-Applied"] = f"wait={int(seconds)}"
    return response
