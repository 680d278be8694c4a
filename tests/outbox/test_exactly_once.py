"""Exactly-once effect: the handler's effect and its processed-id record commit in one transaction, so
a message delivered again (checkpoint reset, a Kafka redelivery) has no second effect."""

from __future__ import annotations

import pytest

from apps.notifications.models import Notification
from apps.outbox import messages
from apps.outbox.apply import handle_with_dedupe
from apps.outbox.drain import drain, drain_subscriber
from apps.outbox.models import DeadLetter, OutboxMessage, ProcessedMessage, SubscriberCheckpoint
from apps.outbox.public import Delivery, lag, outbox_subscribers
from apps.projections.models import TimelineEntry
from tests.helpers import act, create_escrow, pay
from tests.outbox.support import Recorder, installed, new_escrow_id, publish_event

pytestmark = pytest.mark.django_db(transaction=True)


def _reset_checkpoint(name: str) -> None:
    SubscriberCheckpoint.objects.filter(subscriber=name).update(last_txid=0, last_id=0)


def test_redelivery_after_a_checkpoint_reset_has_no_second_effect():
    recorder = Recorder("once")
    escrow_id = new_escrow_id()
    with installed(recorder) as (sub,):
        for version in (1, 2, 3):
            publish_event(escrow_id, version)
        assert drain_subscriber(sub) == 3
        assert recorder.effects() == 3

        _reset_checkpoint(sub.name)  # as if the checkpoint write had been lost in a crash
        assert lag(sub) == 3

        assert drain_subscriber(sub) == 0
        assert recorder.effects() == 3
        assert set(recorder.calls.values()) == {1}  # the dedupe record stopped it before the handler
        assert lag(sub) == 0


def test_handle_with_dedupe_twice_has_one_effect_and_a_failure_leaves_none():
    recorder = Recorder("once-direct")
    escrow_id = new_escrow_id()
    with installed(recorder) as (sub,):
        good = publish_event(escrow_id, 1)
        bad = publish_event(escrow_id, 2)
        recorder.failing.add(bad.event_id)

        def deliver(row: OutboxMessage) -> bool:
            return handle_with_dedupe(sub, messages.decode(row.type, row.payload), Delivery.of(row))

        assert deliver(good) is True
        assert deliver(good) is False
        assert recorder.effects() == 1
        assert recorder.calls[good.event_id] == 1

        with pytest.raises(RuntimeError, match="poison"):
            deliver(bad)
        # The handler did write before it raised; the rollback took the write and the record with it.
        assert recorder.calls[bad.event_id] == 1
        assert recorder.effects() == 1
        assert not ProcessedMessage.objects.filter(subscriber=sub.name, event_id=bad.event_id).exists()


def test_real_subscribers_replaying_a_whole_lifecycle_change_nothing(api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert act(as_buyer, escrow_id, "release").status_code == 202
    timeline, notifications = TimelineEntry.objects.count(), Notification.objects.count()
    processed = ProcessedMessage.objects.count()
    assert timeline >= 5 and notifications > 0

    with bus_inline_off():
        for sub in outbox_subscribers():
            _reset_checkpoint(sub.name)
        assert sum(lag(sub) for sub in outbox_subscribers()) > 0
        assert drain() == 0

    assert TimelineEntry.objects.count() == timeline
    assert Notification.objects.count() == notifications
    assert ProcessedMessage.objects.count() == processed
    assert not DeadLetter.objects.exists()
    assert all(lag(sub) == 0 for sub in outbox_subscribers())


def bus_inline_off():
    from django.test import override_settings

    return override_settings(BUS_INLINE_DISPATCH=False)
