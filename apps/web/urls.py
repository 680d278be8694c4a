"""The web app's pages, mounted at `/`."""

from django.urls import include, path

from apps.web import views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("", include("apps.web.checkout_urls")),
]
