"""What the project wiring (escrow_project) may use of the gateway beyond its URLs: the admin's login form,
which asks staff for their TOTP code, and the purge of expired idempotency records, run as a bus worker
tick."""

from apps.gateway.idempotency import idempotency_records_purge
from apps.gateway.mfa import MFAAdminAuthenticationForm

__all__ = ["MFAAdminAuthenticationForm", "idempotency_records_purge"]
