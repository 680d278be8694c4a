"""The project's routes plus /bench/noop: the smallest Django view, served through the same gunicorn,
middleware and connection settings as the API, so its throughput is the framework's ceiling."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from escrow_project.urls import handler400, handler404, handler500
from escrow_project.urls import urlpatterns as project_urlpatterns

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]


def noop(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b'{"ok":true}', content_type="application/json")


urlpatterns = [path("bench/noop", noop), *project_urlpatterns]
