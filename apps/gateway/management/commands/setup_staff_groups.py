"""manage.py setup_staff_groups: the staff groups and exactly the permissions each needs (idempotent:
a group's permissions are set to this list, so one granted by hand is taken away again)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction

# Least privilege: agents work disputes; ops watch money and the bus. Neither may add, change or delete
# an escrow or its events (the admin has no such form anyway), and neither reads the other's tools.
GROUP_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "dispute_agent": (
        "escrow.view_escrow",
        "escrow.view_escrowevent",
        "gateway.view_auditlog",
        "gateway.resolve_dispute",
        "gateway.add_dispute_note",
        "gateway.hold_escrow",
        "gateway.upload_evidence",
    ),
    "ops": (
        "escrow.view_escrow",
        "escrow.view_escrowevent",
        "gateway.view_auditlog",
        "gateway.hold_escrow",
        "gateway.retry_payout",
        "gateway.return_stranded_funds",
        "outbox.view_outboxmessage",
        "outbox.view_subscribercheckpoint",
        "outbox.view_deadletter",
        "outbox.change_deadletter",
        "projections.view_projectionrebuild",
        "projections.view_activegeneration",
    ),
}


def staff_groups_setup() -> dict[str, int]:
    counts = {}
    with transaction.atomic():
        for name, perms in GROUP_PERMISSIONS.items():
            group, _ = Group.objects.get_or_create(name=name)
            wanted = []
            for perm in perms:
                app_label, codename = perm.split(".")
                wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
            group.permissions.set(wanted)
            counts[name] = len(wanted)
    return counts


class Command(BaseCommand):
    help = "Create the dispute_agent and ops groups with least-privilege permissions."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, count in staff_groups_setup().items():
            self.stdout.write(f"{name}: {count} permissions")
