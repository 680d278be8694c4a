from django.apps import AppConfig


class WebConfig(AppConfig):
    """The web app for buyers and sellers: an edge, like the gateway. Server-rendered pages that parse
    input and call the same public functions (escrow dispatch, projections' selectors) as the REST API."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.web"
    label = "web"

    def ready(self) -> None:
        from apps.web import checks  # noqa: F401 - registers the deploy check
