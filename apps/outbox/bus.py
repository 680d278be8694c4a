"""Transitional: the subscriber types under their old import path, for the one module that still imports
them from here (`apps.payments.handlers`, listed in pyproject's public-only ignores). Import them from
`apps.outbox.public`; delete this module together with that ignore line."""

from apps.outbox.registry import Delivery, ExternalEffect, Subscriber

__all__ = ["Delivery", "ExternalEffect", "Subscriber"]
