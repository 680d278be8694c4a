"""A whole escrow lifecycle through the public API (sandbox provider) sends each party the expected DMs
on the fake Discord, exactly once each, even when the events are delivered again."""

from __future__ import annotations

from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.models import DeliveryAttempt, Notification
from apps.outbox import messages
from apps.outbox.apply import handle_with_dedupe
from apps.outbox.models import OutboxMessage
from apps.outbox.public import Delivery
from apps.outbox.registry import get_subscriber
from tests.helpers import act, create_escrow, pay, state_of
from tests.notifications.conftest import BUYER_DISCORD_ID, SELLER_DISCORD_ID

LIFECYCLE_KINDS = ["escrow_created", "escrow_accepted", "funds_held", "delivered", "released"]


def test_lifecycle_sends_each_party_each_dm_exactly_once(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    link_discord(seller, SELLER_DISCORD_ID)
    as_buyer, as_seller = api_client(buyer), api_client(seller)

    escrow_id = create_escrow(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert act(as_buyer, escrow_id, "release").status_code == 202
    assert state_of(as_buyer, escrow_id) == "RELEASED"

    buyer_dms, seller_dms = fake_discord.dms_to(BUYER_DISCORD_ID), fake_discord.dms_to(SELLER_DISCORD_ID)
    assert len(buyer_dms) == len(seller_dms) == len(LIFECYCLE_KINDS)
    # the seller (the counterparty) is asked to accept; the buyer is told to pay only once they have
    assert "Deal for 149.99 USD created" in buyer_dms[0] and "wait for the seller to accept" in buyer_dms[0]
    assert "proposes a deal for 149.99 USD" in seller_dms[0] and "accept it or decline it" in seller_dms[0]
    assert "accepted" in buyer_dms[1] and "pay it before the funding deadline" in buyer_dms[1]
    assert "Wait for the buyer's payment" in seller_dms[1]
    assert "deliver the item" in seller_dms[2]
    assert "release the funds, or open a dispute" in buyer_dms[3]
    assert "is on its way to you" in seller_dms[4]
    # Each DM says what to do next and links to the escrow.
    for dm in buyer_dms + seller_dms:
        assert f"/api/v1/escrows/{escrow_id}" in dm
    # No DM went to anyone else; every notification is SENT after exactly one attempt.
    assert {dm.recipient_id for dm in fake_discord.sent} == {BUYER_DISCORD_ID, SELLER_DISCORD_ID}
    notifications = Notification.objects.all()
    assert sorted(n.kind for n in notifications if n.user_id == buyer.pk) == sorted(LIFECYCLE_KINDS)
    assert {n.status for n in notifications} == {Notification.Status.SENT}
    assert DeliveryAttempt.objects.count() == notifications.count() == 10
    assert all(n.discord_message_id for n in notifications)

    # The same events arrive again (a Kafka redelivery, a replay): no second DM.
    subscriber = get_subscriber("notifications")
    for row in OutboxMessage.objects.filter(type__in=subscriber.types):
        handle_with_dedupe(subscriber, messages.decode(row.type, row.payload), Delivery.of(row))
    deliver_due_notifications()
    assert len(fake_discord.sent) == 10
    assert Notification.objects.count() == 10


def test_unlinked_user_gets_no_dm_and_the_skip_is_recorded(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)

    create_escrow(api_client(buyer), seller=seller)

    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 2  # created, accepted
    skipped = Notification.objects.get(user_id=seller.pk, kind="escrow_created")
    assert skipped.status == Notification.Status.SKIPPED
    attempt = skipped.delivery_attempts.get()
    assert attempt.outcome == DeliveryAttempt.Outcome.SKIPPED and "no linked Discord account" in attempt.detail
    assert {e.recipient_id for e in fake_discord.exchanges} <= {BUYER_DISCORD_ID, None}
