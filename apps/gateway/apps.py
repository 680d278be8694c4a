from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"
    verbose_name = "API gateway"

    def ready(self) -> None:
        from apps.gateway import checks, signals

        del checks  # imported for its deploy check, registered on import
        signals.connect()
