"""What the project wiring (escrow_project) may use of the gateway beyond its URLs: the admin's login form,
which asks staff for their TOTP code, the purges of expired idempotency records and of the database cache's
expired rows, run as bus worker ticks, and the start of a serving process's token revocation stream (the WSGI module, at worker boot)."""

from apps.gateway.cache_table import expired_cache_entries_purge
from apps.gateway.idempotency import idempotency_records_purge
from apps.gateway.mfa import MFAAdminAuthenticationForm
from apps.gateway.revocation import start as start_revocation_stream

__all__ = [
    "MFAAdminAuthenticationForm",
    "expired_cache_entries_purge",
    "idempotency_records_purge",
    "start_revocation_stream",
]
