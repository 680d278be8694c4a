"""Enrolls a staff user's TOTP authenticator (allauth.mfa) for the admin login; prints the otpauth:// URI once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.gateway.mfa import enroll_totp


class Command(BaseCommand):
    help = "Create a TOTP authenticator for USERNAME and print its otpauth:// URI (add it to an authenticator app)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = get_user_model().objects.get_by_natural_key(options["username"])
        except get_user_model().DoesNotExist as exc:
            raise CommandError(f"no user {options['username']!r}") from exc
        if not user.is_staff:
            # Only the admin checks this factor; enrolling a non-staff user would suggest protection it lacks.
            raise CommandError(f"{user.get_username()} is not staff")
        try:
            uri = enroll_totp(user=user)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(uri)
