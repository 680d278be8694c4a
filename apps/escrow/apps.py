from django.apps import AppConfig


class EscrowConfig(AppConfig):
    name = "apps.escrow"
    label = "escrow"
    verbose_name = "Escrow"
