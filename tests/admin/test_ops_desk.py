"""Ops actions in the admin (hold, lift, retry a failed payout, return stranded funds), the ops queues page
and the audited notification resend: every action goes through dispatch with an AuditLog row; refused or
unauthorised attempts change nothing."""

from __future__ import annotations

from typing import Any

from django.test import Client

from apps.escrow.models import Escrow
from apps.gateway.models import AuditLog
from apps.notifications.models import Notification
from tests.admin.conftest import logged_in
from tests.admin.test_dispute_desk import footprint
from tests.factories import UserFactory
from tests.fakes.stripe_server import signed_event
from tests.gateway.support import settle
from tests.helpers import create_escrow
from tests.notifications.conftest import BUYER_DISCORD_ID, discord_server, fake_discord, link_discord  # noqa: F401
from tests.payments.conftest import fake_stripe  # noqa: F401


def desk(escrow_id: str) -> str:
    return f"/admin/escrow/escrow/{escrow_id}/dispute/"


def test_ops_hold_and_lift_from_the_desk_are_audited(ops_user: Any, disputed: str) -> None:
    client = logged_in(ops_user)
    assert 'value="hold"' in client.get(desk(disputed)).content.decode()

    assert (
        client.post(desk(disputed), {"action": "hold", "ops-reason": "same card on five accounts"}).status_code == 302
    )
    escrow = Escrow.objects.get(pk=disputed)
    assert escrow.on_hold_since is not None
    [entry] = AuditLog.objects.filter(escrow_id=disputed, action="hold")
    assert (entry.actor_id, entry.reason, entry.detail["state_after"]) == (
        ops_user.pk,
        "same card on five accounts",
        "DISPUTED",
    )
    assert entry.command_id is not None

    # Holding again is refused by the service: nothing changes, nothing is audited.
    before = footprint(disputed)
    response = client.post(desk(disputed), {"action": "hold", "ops-reason": "again"})
    assert response.status_code == 400 and "Refused" in response.content.decode()
    assert footprint(disputed) == before

    assert client.post(desk(disputed), {"action": "unhold", "ops-reason": "cleared by risk"}).status_code == 302
    assert Escrow.objects.get(pk=disputed).on_hold_since is None
    assert AuditLog.objects.filter(escrow_id=disputed, action="unhold").count() == 1


def test_an_ops_action_without_a_reason_or_permission_changes_nothing(agent: Any, ops_user: Any, disputed: str) -> None:
    before = footprint(disputed)
    assert logged_in(ops_user).post(desk(disputed), {"action": "hold", "ops-reason": "  "}).status_code == 400
    # Agents may hold, but retrying payouts and returning money is for ops.
    assert logged_in(agent).post(desk(disputed), {"action": "retry_payout", "ops-reason": "x"}).status_code == 403
    assert logged_in(agent).post(desk(disputed), {"action": "return_stranded", "ops-reason": "x"}).status_code == 403
    assert footprint(disputed) == before
    assert 'value="retry_payout"' not in logged_in(agent).get(desk(disputed)).content.decode()


def test_ops_retry_a_failed_transfer_from_the_desk(
    ops_user: Any,
    fake_stripe: Any,
    api_client: Any,
    buyer: Any,
    seller: Any,  # noqa: F811
) -> None:
    from tests.payments.support import released_with_a_refused_transfer
    from tests.payments.test_stripe_rail import webhook

    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = released_with_a_refused_transfer(fake_stripe, as_buyer, as_seller, seller)
    settle()
    client = logged_in(ops_user)
    page = client.get("/admin/escrow/escrow/ops/").content.decode()
    assert page.count(escrow_id) >= 2  # in "needs attention" and in "failed transfers and refunds"
    assert 'id="daily-figures"' in page and "14999" in page  # the day's held figure

    assert client.post(desk(escrow_id), {"action": "retry_payout", "ops-reason": "onboarding done"}).status_code == 302
    [transfer] = fake_stripe.of_kind("transfer")
    assert webhook(as_buyer, *signed_event("transfer.created", transfer)).status_code == 200
    settle()
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.held_minor) == ("RELEASED", 0)
    assert AuditLog.objects.filter(escrow_id=escrow_id, action="retry_payout").count() == 1
    # Nothing left to retry: the button is refused and nothing more is audited.
    assert client.post(desk(escrow_id), {"action": "retry_payout", "ops-reason": "again"}).status_code == 400
    assert AuditLog.objects.filter(escrow_id=escrow_id, action="retry_payout").count() == 1


def test_the_ops_queues_page_is_for_staff_with_escrow_view_only(transactional_db: None) -> None:
    client = Client()
    client.force_login(UserFactory(username="clerk", is_staff=True))
    assert client.get("/admin/escrow/escrow/ops/").status_code == 403


def test_a_notification_resend_from_the_admin_is_audited_and_a_refused_one_is_not(
    api_client: Any,
    buyer: Any,
    seller: Any,
    fake_discord: Any,
    link_discord: Any,  # noqa: F811
) -> None:
    link_discord(buyer, BUYER_DISCORD_ID)
    escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]
    settle()
    skipped = Notification.objects.get(user_id=seller.pk, kind="escrow_created")  # the seller has no Discord link
    sent = Notification.objects.get(user_id=buyer.pk, kind="escrow_created")
    assert (skipped.status, sent.status) == ("skipped", "sent")
    admin = Client()
    staff = UserFactory(username="ops-admin", is_staff=True, is_superuser=True)
    admin.force_login(staff)

    admin.post("/admin/notifications/notification/", {"action": "resend", "_selected_action": [str(sent.pk)]})
    assert not AuditLog.objects.filter(action="resend_notification").exists()
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1  # no second

    admin.post("/admin/notifications/notification/", {"action": "resend", "_selected_action": [str(skipped.pk)]})
    [entry] = AuditLog.objects.filter(action="resend_notification")
    assert (entry.actor_id, str(entry.escrow_id), entry.target) == (staff.pk, escrow_id, f"notification:{skipped.pk}")
    assert entry.detail["status_before"] == "skipped"
