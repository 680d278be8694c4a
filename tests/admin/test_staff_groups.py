"""Staff work on first try: on a fresh database, `migrate` alone creates the staff groups with their
permissions, so a user made with `mint_token --staff` can use the admin at once; `setup_staff_groups`
re-applies the same list and takes back a permission granted by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from apps.gateway.management.commands.setup_staff_groups import GROUP_PERMISSIONS

ROOT = Path(__file__).resolve().parents[2]

CHECK_STAFF = """
import json, django
django.setup()
from django.contrib.auth.models import Group, User
from django.test import Client
user = User.objects.get(username="night_ops")
client = Client()
client.force_login(user)
print(json.dumps({
    "groups": {g.name: sorted(f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.all())
               for g in Group.objects.all()},
    "perms": sorted(user.get_all_permissions()),
    "changelist": client.get("/admin/escrow/escrow/").status_code,
    "ops_queues": client.get("/admin/escrow/escrow/ops/").status_code,
}))
"""


def run(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_fresh_database_has_the_staff_groups_and_minted_staff_can_work(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}", "LOG_LEVEL": "WARNING"}
    run(["manage.py", "migrate", "--noinput", "-v0"], env)
    token = run(["manage.py", "mint_token", "night_ops", "--create", "--staff"], env).strip().splitlines()[-1]
    assert token.count(".") == 2  # a JWT

    seen = json.loads(run(["-c", CHECK_STAFF], env).strip().splitlines()[-1])
    assert seen["groups"] == {name: sorted(perms) for name, perms in GROUP_PERMISSIONS.items()}
    assert {"gateway.resolve_dispute", "gateway.retry_payout", "outbox.view_deadletter"} <= set(seen["perms"])
    assert "escrow.change_escrow" not in seen["perms"]
    assert seen["changelist"] == 200 and seen["ops_queues"] == 200


def test_setup_staff_groups_reruns_safely_and_takes_back_extra_permissions(db: None) -> None:
    call_command("setup_staff_groups")
    ops = Group.objects.get(name="ops")
    ops.permissions.add(Permission.objects.get(content_type__app_label="escrow", codename="change_escrow"))

    call_command("setup_staff_groups")
    call_command("setup_staff_groups")

    assert Group.objects.filter(name__in=GROUP_PERMISSIONS).count() == len(GROUP_PERMISSIONS)
    got = {f"{p.content_type.app_label}.{p.codename}" for p in Group.objects.get(name="ops").permissions.all()}
    assert got == set(GROUP_PERMISSIONS["ops"])
