"""Two senders running at once never claim the same notification: each is attempted once, one DM."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection

from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.models import DeliveryAttempt, Notification
from tests.notifications.conftest import BUYER_DISCORD_ID


@pytest.mark.postgres_only
def test_concurrent_passes_claim_disjoint_rows(buyer, fake_discord, link_discord, settings):
    settings.NOTIFY_DELIVER_ON_COMMIT = False
    link_discord(buyer, BUYER_DISCORD_ID)
    Notification.objects.bulk_create(
        [
            Notification(user_id=buyer.pk, event_id=uuid.uuid4(), kind="funds_held", text=f"message {n}")
            for n in range(30)
        ]
    )
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def sender() -> None:
        try:
            start.wait()
            while deliver_due_notifications(limit=5):
                pass
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert Notification.objects.exclude(status=Notification.Status.SENT).count() == 0
    # Each of the 30 notifications was attempted exactly once.
    assert DeliveryAttempt.objects.count() == 30
    assert len(fake_discord.message_posts_to(BUYER_DISCORD_ID)) == 30
    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 30
