"""Reminders before a deadline: once each, to the right person, with the right buttons, respecting
preferences, and fired by the bus worker's tick."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from apps.escrow.models import Escrow
from apps.notifications.models import Notification
from apps.notifications.public import send_due_reminders
from apps.outbox.worker import BusWorker, registered_ticks
from tests.gateway.support import create_settled, settle
from tests.helpers import act, create_escrow, pay
from tests.notifications.conftest import BUYER_DISCORD_ID, SELLER_DISCORD_ID

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def linked(buyer: Any, seller: Any, link_discord: Any, fake_discord: Any, settings: Any) -> Any:
    link_discord(buyer, BUYER_DISCORD_ID)
    link_discord(seller, SELLER_DISCORD_ID)
    settings.PUBLIC_BASE_URL = "http://testserver"
    return fake_discord


def reminders() -> list[Notification]:
    return list(Notification.objects.filter(kind__startswith="reminder_").order_by("id"))


def deliver() -> None:
    from apps.notifications.public import deliver_due_notifications

    deliver_due_notifications()


def test_the_buyer_is_reminded_to_pay_once_with_the_pay_link(api_client, buyer, seller, linked, settings):
    settings.REMINDER_FUNDING_HOURS_BEFORE = 6
    escrow_id = create_settled(api_client(buyer), seller=seller)["escrow_id"]
    deadline = Escrow.objects.get(pk=escrow_id).funding_deadline

    assert send_due_reminders(now=deadline - datetime.timedelta(hours=7), force=True) == 0
    assert send_due_reminders(now=deadline - datetime.timedelta(hours=5), force=True) == 1
    assert send_due_reminders(now=deadline - datetime.timedelta(hours=4), force=True) == 0  # once
    deliver()

    [reminder] = reminders()
    assert (reminder.kind, reminder.user_id, str(reminder.escrow_id)) == ("reminder_funding", buyer.pk, escrow_id)
    [dm] = [m for m in linked.messages_to(BUYER_DISCORD_ID) if m.content.startswith("Reminder")]
    assert "pay 149.99 USD" in dm.content and f"<t:{int(deadline.timestamp())}:f>" in dm.content
    [link] = dm.links
    assert link.startswith("http://testserver/checkout/")
    assert dm.custom_ids == []
    assert not any(m.content.startswith("Reminder") for m in linked.messages_to(SELLER_DISCORD_ID))


def test_a_paid_deal_gets_no_funding_reminder(api_client, buyer, seller, linked, settings):
    settings.REMINDER_FUNDING_HOURS_BEFORE = 6
    escrow_id = create_settled(api_client(buyer), seller=seller)["escrow_id"]
    deadline = Escrow.objects.get(pk=escrow_id).funding_deadline
    assert pay(api_client(buyer), escrow_id).status_code == 202
    settle()

    assert send_due_reminders(now=deadline - datetime.timedelta(hours=1), force=True) == 0
    assert reminders() == []


def test_the_buyer_is_reminded_to_release_or_dispute_before_inspection_ends(
    api_client, buyer, seller, linked, settings
):
    settings.REMINDER_INSPECTION_HOURS_BEFORE = 12
    escrow_id = create_settled(api_client(buyer), seller=seller)["escrow_id"]
    assert pay(api_client(buyer), escrow_id).status_code == 202
    assert act(api_client(seller), escrow_id, "deliver").status_code == 202
    settle()
    deadline = Escrow.objects.get(pk=escrow_id).inspection_deadline

    assert send_due_reminders(now=deadline - datetime.timedelta(hours=13), force=True) == 0
    assert send_due_reminders(now=deadline - datetime.timedelta(hours=11), force=True) == 1
    deliver()

    [dm] = [m for m in linked.messages_to(BUYER_DISCORD_ID) if m.content.startswith("Reminder")]
    assert "Release the funds or open a dispute" in dm.content
    assert dm.custom_ids == [f"escrow:release:{escrow_id}", f"escrow:dispute:{escrow_id}"]


def test_a_muted_reminder_is_not_sent(api_client, buyer, seller, linked, settings):
    settings.REMINDER_FUNDING_HOURS_BEFORE = 6
    assert (
        api_client(buyer)
        .patch("/api/v1/me/notification-preferences", {"reminder_funding": False}, format="json")
        .status_code
        == 200
    )
    escrow_id = create_settled(api_client(buyer), seller=seller)["escrow_id"]
    deadline = Escrow.objects.get(pk=escrow_id).funding_deadline

    send_due_reminders(now=deadline - datetime.timedelta(hours=1), force=True)
    deliver()

    [reminder] = reminders()
    assert reminder.status == Notification.Status.SKIPPED
    assert not any(m.content.startswith("Reminder") for m in linked.messages_to(BUYER_DISCORD_ID))


def test_the_bus_worker_tick_sends_due_reminders(api_client, buyer, seller, linked, settings):
    # A lead time longer than the whole funding period: due at once.
    settings.REMINDER_FUNDING_HOURS_BEFORE = settings.FUNDING_DEADLINE_HOURS + 1
    settings.REMINDER_SCAN_SECONDS = 0
    create_settled(api_client(buyer), seller=seller)

    BusWorker(ticks=registered_ticks(leave_out=frozenset({"timers"})), poll_seconds=0).run_once()

    assert [m.content.startswith("Reminder") for m in linked.messages_to(BUYER_DISCORD_ID)].count(True) == 1
    assert [r.status for r in reminders()] == [Notification.Status.SENT]


def test_the_counterparty_is_reminded_to_accept_or_decline(api_client, buyer, seller, linked, settings):
    settings.REMINDER_ACCEPTANCE_HOURS_BEFORE = 12
    escrow_id = create_escrow(api_client(buyer), seller=seller, accept=False)["escrow_id"]
    settle()
    deadline = Escrow.objects.get(pk=escrow_id).acceptance_deadline

    assert send_due_reminders(now=deadline - datetime.timedelta(hours=13), force=True) == 0
    assert send_due_reminders(now=deadline - datetime.timedelta(hours=11), force=True) == 1
    deliver()

    [reminder] = reminders()
    assert (reminder.kind, reminder.user_id) == ("reminder_acceptance", seller.pk)
    [dm] = [m for m in linked.messages_to(SELLER_DISCORD_ID) if m.content.startswith("Reminder")]
    assert "waits for your answer" in dm.content
    assert dm.custom_ids == [f"escrow:accept:{escrow_id}", f"escrow:decline:{escrow_id}"]
    assert not any(m.content.startswith("Reminder") for m in linked.messages_to(BUYER_DISCORD_ID))
