from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "apps.payments"
    label = "payments"
    verbose_name = "Payments"

    def ready(self) -> None:
        # The sandbox answers through payments' webhook entry point, as Stripe answers through our URL.
        from apps.payments import webhooks
        from apps.payments.providers import sandbox

        sandbox.endpoint_connect(webhooks.webhook_receive)
