"""One audit trail for staff, whatever the edge: the admin's dead-letter replay writes its AuditLog row
(who replayed which letter) once the replay took effect, and none while the letter still fails; the same
replay from the shell writes one row per run (tests/core/test_staff_commands.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction

from apps.core.public import AuditLog
from apps.outbox.models import DeadLetter
from apps.outbox.publish import outbox_append
from apps.payments.public import sandbox_pay
from proto.payments import v1 as payments_v1
from tests.admin.conftest import logged_in
from tests.escrow import given

pytestmark = pytest.mark.django_db(transaction=True)


def _dead_letter(settings: Any, buyer: Any, seller: Any) -> tuple[Any, DeadLetter]:
    # A payout payments cannot carry out yet (nothing was paid): retried, then dead-lettered.
    settings.BUS_RETRY_BASE_SECONDS = 0
    escrow_id = given.create(buyer=buyer, seller=seller)
    with transaction.atomic():
        outbox_append(
            message=payments_v1.TransferToSeller(
                escrow_id=str(escrow_id), seller_id=seller.pk, amount=given.money(100), fee=given.money(0)
            ),
            aggregate_id=str(escrow_id),
            aggregate_version=99,
        )
    return escrow_id, DeadLetter.objects.get(subscriber="payments")


def test_an_admin_replay_is_audited_once_it_takes_effect(settings: Any, ops_user: Any, buyer: Any, seller: Any) -> None:
    escrow_id, letter = _dead_letter(settings, buyer, seller)
    admin = logged_in(ops_user)

    still_failing = admin.post(
        "/admin/outbox/deadletter/", {"action": "replay", "_selected_action": [letter.pk]}, follow=True
    )
    assert "still failing" in still_failing.content.decode()
    assert not AuditLog.objects.exists()

    assert sandbox_pay(str(escrow_id)).status == "processed"  # the cause is fixed
    admin.post("/admin/outbox/deadletter/", {"action": "replay", "_selected_action": [letter.pk]}, follow=True)

    [row] = AuditLog.objects.all()
    assert (row.actor_id, row.action, row.escrow_id) == (ops_user.pk, "replay_dead_letter", escrow_id)
    assert row.target == f"dead letter {letter.pk}" and row.reason


def test_the_same_replay_from_the_shell_names_its_operator(
    settings: Any, ops_user: Any, buyer: Any, seller: Any
) -> None:
    escrow_id, letter = _dead_letter(settings, buyer, seller)
    assert sandbox_pay(str(escrow_id)).status == "processed"

    call_command(
        "replay_dead_letters",
        str(letter.pk),
        "--staff",
        ops_user.username,
        "--reason",
        "INC-7: payment arrived",
        stdout=io.StringIO(),
    )

    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REPLAYED
    [row] = AuditLog.objects.all()
    assert (row.actor_id, row.action, row.reason) == (ops_user.pk, "replay_dead_letters", "INC-7: payment arrived")
    assert (row.detail["considered"], row.detail["replayed"], row.detail["still_failing"]) == (1, 1, 0)
