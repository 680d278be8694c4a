"""A housekeeping tick that runs on the bus worker's clock but does its work at most once per N seconds in
this process (the clock ticks every few seconds; a purge need not)."""

from __future__ import annotations

import time

from django.conf import settings


class AtMostEvery:
    """`due()` is true at most once per `settings.<setting>` seconds (read on each call, so a test or a
    deployment may change it), or whenever it is forced."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.last = float("-inf")

    def due(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self.last < float(getattr(settings, self.setting)):
            return False
        self.last = now
        return True
