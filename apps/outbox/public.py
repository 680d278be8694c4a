"""What other apps may use from the outbox app (the rest is reached through the burn-down list in
pyproject.toml until it moves here)."""

from apps.outbox.progress import CommandProgress

__all__ = ["CommandProgress"]
