"""What the project wiring may use of the gateway beyond its URLs: the purge of expired idempotency
records, run as a bus worker tick."""

from apps.gateway.idempotency import idempotency_records_purge

__all__ = ["idempotency_records_purge"]
