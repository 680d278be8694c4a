"""Ops see dead notifications in the admin and resend them from there or with a command."""

from __future__ import annotations

from django.core.management import call_command
from django.test import Client

from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.models import Notification
from tests.factories import UserFactory
from tests.helpers import create_escrow
from tests.notifications.conftest import BUYER_DISCORD_ID


def _make_dead(api_client, buyer, seller, fake_discord, link_discord, settings) -> Notification:
    link_discord(buyer, BUYER_DISCORD_ID)
    settings.NOTIFY_RETRY_BASE_SECONDS = 0.0
    settings.NOTIFY_MAX_ATTEMPTS = 2
    fake_discord.server_error_next(BUYER_DISCORD_ID, status=503, times=10)
    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each
    deliver_due_notifications()
    notification = Notification.objects.get(user_id=buyer.pk, kind="escrow_created")
    assert notification.status == Notification.Status.DEAD
    return notification


def test_admin_lists_dead_notifications_and_resends_them(
    api_client, buyer, seller, fake_discord, link_discord, settings
):
    dead = _make_dead(api_client, buyer, seller, fake_discord, link_discord, settings)
    admin = Client()
    admin.force_login(UserFactory(username="ops-admin", is_staff=True, is_superuser=True))

    page = admin.get("/admin/notifications/notification/?status__exact=dead")
    assert page.status_code == 200
    assert f">{dead.pk}<" in page.content.decode()
    assert admin.get(f"/admin/notifications/notification/{dead.pk}/change/").status_code == 200

    fake_discord.heal(BUYER_DISCORD_ID)
    response = admin.post(
        "/admin/notifications/notification/", {"action": "resend", "_selected_action": [str(dead.pk)]}
    )
    assert response.status_code == 302

    dead.refresh_from_db()
    assert dead.status == Notification.Status.SENT
    assert [a.outcome for a in dead.delivery_attempts.order_by("number")] == ["transient", "transient", "sent"]
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1


def test_deliver_notifications_once_sends_what_is_due(
    api_client, buyer, seller, fake_discord, link_discord, settings, capsys
):
    settings.NOTIFY_DELIVER_ON_COMMIT = False
    link_discord(buyer, BUYER_DISCORD_ID)
    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each
    assert fake_discord.sent == []  # nothing sent in the committing thread

    call_command("deliver_notifications", "--once")

    # The buyer's; the seller has no linked account, so theirs is skipped, not sent.
    assert "attempted 1" in capsys.readouterr().out
    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 1
    assert Notification.objects.get(user_id=seller.pk).status == Notification.Status.SKIPPED
