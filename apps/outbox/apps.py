from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class OutboxConfig(AppConfig):
    name = "apps.outbox"
    label = "outbox"
    verbose_name = "Outbox and bus"

    def ready(self) -> None:
        # The project's wiring module registers every app's subscriber (an explicit registry, no signals).
        import_module(getattr(settings, "BUS_WIRING", "escrow_project.bus"))
        # The drain registers the bus's wake-up on commit (apps.outbox.wakeup) when it is imported.
        import_module("apps.outbox.drain")
