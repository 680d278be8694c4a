from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"
    verbose_name = "API gateway"

    def ready(self) -> None:
        from apps.gateway import checks  # noqa: F401 - registers the deploy check
