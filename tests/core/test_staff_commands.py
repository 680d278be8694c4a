"""Staff management commands write the staff AuditLog, like the admin and the API do: the operator says
who they are (an active staff user) and why, each run leaves one row with what it did, and a run without
them is refused before it does anything."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apps.core.public import AuditLog
from apps.projections.models import GREEN, ActiveGeneration
from tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

STAFF_COMMANDS = {
    # command: (its arguments besides who and why, the AuditLog action, what the row's detail counts)
    "replay_dead_letters": ([], AuditLog.Action.REPLAY_DEAD_LETTERS, {"considered": 0, "replayed": 0}),
    "reprocess_webhooks": ([], AuditLog.Action.REPROCESS_WEBHOOKS, {"considered": 0, "errors": 0}),
    "send_waiting_payouts": ([], AuditLog.Action.SEND_WAITING_PAYOUTS, {"sent": 0}),
    "rebuild_projections": (["escrows", "--no-progress"], AuditLog.Action.REBUILD_PROJECTIONS, {"source": "auto"}),
    "resend_notifications": (["999999"], AuditLog.Action.RESEND_NOTIFICATION, {"queued": []}),
}


@pytest.fixture
def ops() -> Any:
    return StaffFactory(username="ops-on-call")


@pytest.mark.parametrize("name", sorted(STAFF_COMMANDS))
def test_a_run_writes_one_audit_row_with_who_why_and_what_it_did(name: str, ops: Any) -> None:
    args, action, counts = STAFF_COMMANDS[name]

    call_command(name, *args, "--staff", ops.username, "--reason", "incident 42: after the fix", stdout=io.StringIO())

    [row] = AuditLog.objects.all()
    assert (row.actor_id, row.action, row.reason) == (ops.pk, action, "incident 42: after the fix")
    assert row.target
    assert row.detail["edge"] == "command"
    assert {key: row.detail[key] for key in counts} == counts


@pytest.mark.parametrize("name", sorted(STAFF_COMMANDS))
@pytest.mark.parametrize(
    "who_and_why",
    [
        pytest.param([], id="nobody"),
        pytest.param(["--reason", "incident 42"], id="no-staff"),
        pytest.param(["--staff", "ops-on-call"], id="no-reason"),
        pytest.param(["--staff", "ops-on-call", "--reason", "  "], id="blank-reason"),
        pytest.param(["--staff", "a-customer", "--reason", "incident 42"], id="not-staff"),
        pytest.param(["--staff", "gone", "--reason", "incident 42"], id="inactive-staff"),
        pytest.param(["--staff", "nobody-by-that-name", "--reason", "incident 42"], id="unknown"),
    ],
)
def test_a_run_without_an_active_staff_member_and_a_reason_is_refused(
    name: str, who_and_why: list[str], ops: Any
) -> None:
    UserFactory(username="a-customer")
    StaffFactory(username="gone", is_active=False)
    args, _, _ = STAFF_COMMANDS[name]

    with pytest.raises(CommandError):
        call_command(name, *args, *who_and_why, stdout=io.StringIO())

    assert not AuditLog.objects.exists()


def test_a_refused_rebuild_switches_nothing(ops: Any) -> None:
    with pytest.raises(CommandError, match="--staff"):
        call_command("rebuild_projections", "escrows", "--no-progress", stdout=io.StringIO())

    assert not ActiveGeneration.objects.filter(color=GREEN).exists()
    call_command(
        "rebuild_projections",
        "escrows",
        "--no-progress",
        "--staff",
        ops.username,
        "--reason",
        "r",
        stdout=io.StringIO(),
    )
    assert ActiveGeneration.objects.filter(color=GREEN).exists()
    [row] = AuditLog.objects.all()
    assert [set_["name"] for set_ in row.detail["rebuilt"]] == ["escrows"]
