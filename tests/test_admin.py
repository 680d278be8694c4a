"""The admin for ops staff: escrows with their timeline, read-only state and money, and the dead-letter
queue with its replay action."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import Client

from apps.escrow.models import Escrow
from apps.outbox.models import DeadLetter
from apps.outbox.publish import outbox_append
from apps.payments.models import PaymentArtifact
from apps.payments.public import sandbox_pay
from proto.payments import v1 as payments_v1
from tests.escrow import given
from tests.factories import UserFactory

OPS_PERMISSIONS = (
    "escrow.view_escrow",
    "escrow.view_escrowevent",
    "outbox.view_deadletter",
    "outbox.change_deadletter",
)
PROTECTED_FIELDS = (
    "state",
    "amount_minor",
    "currency",
    "received_minor",
    "held_minor",
    "paid_out_minor",
    "refunded_minor",
    "fee_minor",
    "pending_payout_minor",
    "pending_refund_minor",
    "version",
)


def grant(user: Any, *perms: str) -> None:
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


@pytest.fixture
def ops(staff: Any) -> Client:
    """A logged-in staff member with the ops permissions (Django admin is permission-based)."""
    grant(staff, *OPS_PERMISSIONS)
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def funded(buyer: Any, seller: Any) -> uuid.UUID:
    escrow_id = given.create(buyer=buyer, seller=seller)
    assert sandbox_pay(str(escrow_id)).status == "processed"
    return escrow_id


def form_inputs(html: str) -> set[str]:
    return set(re.findall(r'<(?:input|select|textarea)[^>]*\bname="([^"]+)"', html))


def test_staff_sees_the_escrow_changelist(ops: Client, funded: uuid.UUID) -> None:
    response = ops.get("/admin/escrow/escrow/")
    assert response.status_code == 200
    assert str(funded) in response.content.decode()
    assert "FUNDS_HELD" in response.content.decode()


def test_change_page_shows_the_timeline_and_no_inputs_for_state_or_money(ops: Client, funded: uuid.UUID) -> None:
    response = ops.get(f"/admin/escrow/escrow/{funded}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "escrow.v1.EscrowCreated" in html and "escrow.v1.EscrowFundsHeld" in html
    assert html.index("escrow.v1.EscrowCreated") < html.index("escrow.v1.EscrowFundsHeld")
    assert not form_inputs(html) & set(PROTECTED_FIELDS)
    # the timeline inline carries only its hidden row keys: nothing editable, nothing deletable
    assert {name for name in form_inputs(html) if name.startswith("events-0-")} <= {"events-0-id", "events-0-escrow"}


@pytest.mark.parametrize("who", ["ops", "superuser"])
def test_posting_the_change_form_changes_nothing(who: str, ops: Client, funded: uuid.UUID) -> None:
    client = ops
    if who == "superuser":
        client = Client()
        client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    before, footprint = given.snapshot(funded), given.footprint()

    response = client.post(
        f"/admin/escrow/escrow/{funded}/change/",
        {"state": "RELEASED", "amount_minor": "1", "held_minor": "0", "paid_out_minor": "14999"},
    )

    assert response.status_code == 403
    assert given.snapshot(funded) == before
    assert given.footprint() == footprint
    assert Escrow.objects.get(pk=funded).amount_minor == given.AMOUNT


def test_staff_without_permissions_sees_nothing(staff: Any, funded: uuid.UUID) -> None:
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/escrow/escrow/").status_code == 403
    assert client.get("/admin/outbox/deadletter/").status_code == 403


def test_non_staff_is_sent_to_login(buyer: Any) -> None:
    client = Client()
    client.force_login(buyer)
    response = client.get("/admin/escrow/escrow/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_dead_letters_are_listed_and_replayed_after_the_fix(
    settings: Any, ops: Client, buyer: Any, seller: Any
) -> None:
    # given a payout command payments cannot carry out yet (the escrow's payment has not arrived), so the
    # payments subscriber retries it and dead-letters it
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
    letter = DeadLetter.objects.get(subscriber="payments")
    assert letter.status == "open" and letter.attempts == settings.BUS_MAX_ATTEMPTS
    assert "no succeeded payment" in letter.error

    listing = ops.get("/admin/outbox/deadletter/")
    assert listing.status_code == 200
    assert "payments.v1.TransferToSeller" in listing.content.decode()

    # replaying before the fix leaves it open and says why
    response = ops.post("/admin/outbox/deadletter/", {"action": "replay", "_selected_action": [letter.pk]}, follow=True)
    assert response.status_code == 200
    assert "still failing" in response.content.decode()
    letter.refresh_from_db()
    assert letter.status == "open"
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").exists()

    # when the cause is fixed (the payment arrives) and ops replay it
    assert sandbox_pay(str(escrow_id)).status == "processed"
    response = ops.post("/admin/outbox/deadletter/", {"action": "replay", "_selected_action": [letter.pk]}, follow=True)
    assert "1 replayed, 0 still failing" in response.content.decode()

    # then the effect happened once and the letter is closed
    letter.refresh_from_db()
    assert letter.status == "replayed" and letter.resolved_at is not None
    assert PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").count() == 1
    again = ops.post("/admin/outbox/deadletter/", {"action": "replay", "_selected_action": [letter.pk]}, follow=True)
    assert "0 replayed, 0 still failing" in again.content.decode()
    assert PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").count() == 1
