"""Prints an access token for USERNAME as its last line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from apps.gateway.auth import STAFF_GROUPS
from apps.gateway.tokens import mint_access_token


class Command(BaseCommand):
    help = "Print an access token for a user (for service accounts and scripts)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="create the user if it does not exist")
        parser.add_argument("--staff", action="store_true", help="make the user staff in dispute_agent and ops")
        parser.add_argument("--expires-in", type=int, default=None, help="token lifetime in seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"]
        user = User.objects.filter(username=username).first()
        if user is None:
            if not options["create"]:
                raise CommandError(f"no user {username!r}; pass --create to create it")
            user = User.objects.create_user(username=username)
            user.set_unusable_password()
            user.save()
            self.stderr.write(f"created user {username} (id {user.pk})")
        if not user.is_active:
            raise CommandError(f"user {username!r} is deactivated")
        if options["staff"]:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
            for name in STAFF_GROUPS:
                user.groups.add(Group.objects.get_or_create(name=name)[0])
        self.stdout.write(mint_access_token(user, expires_in=options["expires_in"]))
