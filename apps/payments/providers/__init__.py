"""Payment providers behind one interface. `for_new_payment` picks one for an escrow; later calls use the
provider that took the payment."""

from __future__ import annotations

from django.conf import settings

from apps.payments.providers.base import PaymentProvider
from apps.payments.providers.sandbox import SandboxProvider

_instances: dict[str, PaymentProvider] = {}


def get(name: str) -> PaymentProvider:
    if name not in _instances:
        if name == SandboxProvider.name:
            _instances[name] = SandboxProvider()
        elif name == "stripe" and settings.PAYMENTS_PROVIDER == "live":
            from apps.payments.providers.stripe import StripeProvider  # imports the SDK only when used

            _instances[name] = StripeProvider()
        elif name == "custodian" and settings.PAYMENTS_PROVIDER == "live":
            from apps.payments.providers.custodian import CustodianProvider

            _instances[name] = CustodianProvider()
        else:
            raise LookupError(f"payment provider {name!r} is not available in this deployment")
    return _instances[name]


def for_new_payment(*, amount_minor: int, currency: str) -> PaymentProvider:
    if settings.PAYMENTS_PROVIDER == "sandbox":
        return get(SandboxProvider.name)
    if amount_minor <= settings.STRIPE_MAX_AMOUNT_MINOR:
        return get("stripe")
    return get("custodian")


def reset() -> None:
    """Forget configured clients (after settings change, in tests)."""
    _instances.clear()
