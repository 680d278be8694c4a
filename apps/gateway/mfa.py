"""Second factor for the Django admin: allauth.mfa TOTP authenticators, checked by the admin login form.

The API logs in through allauth headless (which runs allauth's own MFA stage); the admin at /admin/ uses
Django's login view, so this form adds the code check there. Secrets are stored with allauth's Authenticator
model, encrypted by `MFAAdapter` so a database dump alone does not reveal them.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from allauth.core.internal.cryptokit import compare_user_code
from allauth.mfa.adapter import DefaultMFAAdapter, get_adapter
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
    yield_hotp_counters_from_time,
)
from cryptography.fernet import Fernet, InvalidToken
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

ENROLL_HINT = "Ask an administrator to run `manage.py enroll_totp <username>`."


class MFAAdapter(DefaultMFAAdapter):
    """Encrypts TOTP secrets at rest with Fernet. The key is MFA_ENCRYPTION_KEY, or derived from SECRET_KEY;
    rotating that key makes stored secrets unreadable, so staff must re-enroll afterwards."""

    def _fernet(self) -> Fernet:
        raw = settings.MFA_ENCRYPTION_KEY or settings.SECRET_KEY
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(f"mfa-totp:{raw}".encode()).digest()))

    def encrypt(self, text: str) -> str:
        return self._fernet().encrypt(text.encode()).decode()

    def decrypt(self, encrypted_text: str) -> str:
        try:
            return self._fernet().decrypt(encrypted_text.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("TOTP secret cannot be decrypted with the current key: re-enroll") from exc

    def get_totp_issuer(self) -> str:
        # No request here (management command): the issuer comes from settings, not the Host header.
        return settings.MFA_TOTP_ISSUER


def totp_of(user: Any) -> Authenticator | None:
    return Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.TOTP).first()


def enroll_totp(*, user: Any) -> str:
    """Creates the user's TOTP authenticator and returns its otpauth:// URI (the only time it is shown).
    Refuses a user who already has one: replacing it silently would lock out their existing device."""
    if totp_of(user) is not None:
        raise ValueError(f"{user.get_username()} already has a TOTP authenticator")
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return get_adapter().build_totp_url(user, secret)


def totp_uri(*, user: Any) -> str:
    """The otpauth:// URI of an existing authenticator (used only by `seed_demo` for the demo staff user)."""
    authenticator = totp_of(user)
    if authenticator is None:
        raise ValueError(f"{user.get_username()} has no TOTP authenticator")
    return get_adapter().build_totp_url(user, get_adapter().decrypt(authenticator.data["secret"]))


def current_code(*, user: Any) -> str:
    """The code the user's authenticator shows now (tests and the demo; computed with allauth's functions)."""
    authenticator = totp_of(user)
    assert authenticator is not None
    secret = get_adapter().decrypt(authenticator.data["secret"])
    counters = list(yield_hotp_counters_from_time())
    # allauth yields now-tolerance .. now+tolerance: the middle one is "now".
    return format_hotp_value(hotp_value(secret, counters[len(counters) // 2]))


def verify_totp(*, user: Any, code: str) -> bool:
    """allauth's TOTP validation, plus a database replay guard.

    allauth refuses a reused code through the cache, which is per process with the default local-memory
    cache; so the time step of the last accepted code is also kept on the Authenticator row (locked while
    checked), and a code from that step or an earlier one is refused whatever process sees it."""
    with transaction.atomic():
        authenticator = (
            Authenticator.objects.select_for_update().filter(user_id=user.pk, type=Authenticator.Type.TOTP).first()
        )
        if authenticator is None:
            return False
        secret = get_adapter().decrypt(authenticator.data["secret"])
        step = next(
            (
                c
                for c in yield_hotp_counters_from_time()
                if compare_user_code(actual=code, expected=format_hotp_value(hotp_value(secret, c)))
            ),
            None,
        )
        if step is None or step <= authenticator.data.get("last_step", -1):
            return False
        if not TOTP(authenticator).validate_code(code):
            return False
        authenticator.data["last_step"] = step
        authenticator.last_used_at = timezone.now()
        authenticator.save(update_fields=["data", "last_used_at"])
        return True


class MFAAdminAuthenticationForm(AdminAuthenticationForm):
    """Admin login: username, password and, for staff with a TOTP authenticator, the current 6-digit code.
    With ADMIN_REQUIRE_MFA on, staff without an authenticator are refused and told to enroll."""

    otp_code = forms.CharField(
        label="Authenticator code",
        required=False,
        max_length=6,
        min_length=6,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "pattern": "[0-9]{6}"}),
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "otp_missing": "Enter the 6-digit code from your authenticator app.",
        "otp_invalid": "That authenticator code is wrong, expired or already used.",
        "otp_not_enrolled": "A second factor is required to use the admin and you have none. " + ENROLL_HINT,
    }

    def clean(self) -> dict[str, Any]:
        # Password and is_staff first (parent): a wrong password never consumes a code.
        cleaned = super().clean()
        user = self.get_user()
        if user is None:
            return cleaned
        code = (cleaned.get("otp_code") or "").strip()
        if totp_of(user) is None:
            if settings.ADMIN_REQUIRE_MFA:
                self.user_cache = None
                raise ValidationError(self.error_messages["otp_not_enrolled"], code="otp_not_enrolled")
            return cleaned
        if not code:
            self.user_cache = None
            raise ValidationError(self.error_messages["otp_missing"], code="otp_missing")
        if not code.isdigit() or not verify_totp(user=user, code=code):
            self.user_cache = None
            raise ValidationError(self.error_messages["otp_invalid"], code="otp_invalid")
        return cleaned
