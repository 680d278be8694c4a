"""What the project's wiring (escrow_project) takes from the gateway besides its URLs: the admin's login
form, which asks staff for their TOTP code."""

from apps.gateway.mfa import MFAAdminAuthenticationForm

__all__ = ["MFAAdminAuthenticationForm"]
