"""Creates the demo users (buyer, seller, staff) and prints a token for each, for `make run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from apps.gateway.auth import STAFF_GROUPS
from apps.gateway.mfa import enroll_totp, totp_of, totp_uri
from apps.gateway.tokens import mint_access_token

DEMO_USERS = {"buyer": "demo_buyer", "seller": "demo_seller", "staff": "demo_staff"}


class Command(BaseCommand):
    help = "Create demo users and print their access tokens (also written to .demo-tokens.json)."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        tokens = {}
        for role, username in DEMO_USERS.items():
            user, _ = User.objects.get_or_create(username=username)
            if role == "staff":
                user.is_staff = True
                # The staff demo user can also sign in to the admin at /admin/ with this password.
                user.set_password("demo-staff-password")
                user.save()
                for name in STAFF_GROUPS:
                    user.groups.add(Group.objects.get_or_create(name=name)[0])
            tokens[role] = {"username": username, "id": user.pk, "token": mint_access_token(user, expires_in=7 * 86400)}
        Path(settings.BASE_DIR, ".demo-tokens.json").write_text(json.dumps(tokens, indent=2))
        for role, info in tokens.items():
            self.stdout.write(f"{role.upper()}_TOKEN={info['token']}  # {info['username']} (id {info['id']})")
        # The admin asks staff for a TOTP code (ADMIN_REQUIRE_MFA): the demo staff user gets an authenticator
        # once, and its URI is shown on every run (demo only; `enroll_totp` shows a real user's URI just once).
        staff = User.objects.get(username=DEMO_USERS["staff"])
        uri = totp_uri(user=staff) if totp_of(staff) else enroll_totp(user=staff)
        self.stdout.write(f"DEMO_STAFF_TOTP={uri}  # add to an authenticator app for /admin/ (docs/operations.md)")
