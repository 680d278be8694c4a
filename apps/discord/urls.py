"""Mounted at `/api/v1/discord/`."""

from django.urls import path

from apps.discord import views

urlpatterns = [
    path("interactions", views.interactions_endpoint, name="discord-interactions"),
]
