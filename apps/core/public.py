"""The shared kernel's face: money and its formatting, the staff audit log, the read-only admin base.
apps.core imports no other app; every app may import this module."""

from apps.core.admin import ReadOnlyAdmin
from apps.core.audit import ReasonRequired, audit_record
from apps.core.models import AuditLog
from apps.core.money import (
    CURRENCY_EXPONENT,
    InvalidAmount,
    amount_display,
    currency_exponent,
    decimal_string_to_minor,
    minor_to_decimal_string,
    money,
)
from apps.core.staff_commands import StaffCommand

__all__ = [
    "CURRENCY_EXPONENT",
    "AuditLog",
    "InvalidAmount",
    "ReadOnlyAdmin",
    "ReasonRequired",
    "StaffCommand",
    "amount_display",
    "audit_record",
    "currency_exponent",
    "decimal_string_to_minor",
    "minor_to_decimal_string",
    "money",
]
