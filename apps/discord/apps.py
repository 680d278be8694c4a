from django.apps import AppConfig


class DiscordConfig(AppConfig):
    name = "apps.discord"
    label = "discord_edge"
    verbose_name = "Discord interactions"
