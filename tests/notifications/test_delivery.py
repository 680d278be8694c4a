"""Delivery against the fake Discord: rate limits, server errors, timeouts, users who refuse DMs, the
attempt budget and the ops resend. Every attempt is recorded; nothing is sent twice for one event."""

from __future__ import annotations

import datetime
import time

from django.core.management import call_command
from django.utils import timezone

from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.models import DeliveryAttempt, Notification
from tests.helpers import as_staff, create_escrow
from tests.notifications.conftest import BUYER_DISCORD_ID, SELLER_DISCORD_ID


def _created_for(user) -> Notification:
    return Notification.objects.get(user_id=user.pk, kind="escrow_created")


def _outcomes(notification: Notification) -> list[str]:
    return [a.outcome for a in notification.delivery_attempts.order_by("number")]


def test_short_429_is_retried_after_retry_after(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    fake_discord.rate_limit_next(BUYER_DISCORD_ID, retry_after=0.4)

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each

    posts = fake_discord.message_posts_to(BUYER_DISCORD_ID)
    assert [p.status for p in posts] == [429, 200]  # rate-limited, then sent after retry_after
    # The retry came no sooner than Discord asked (a lower bound: correctness, not speed).
    assert posts[1].at - posts[0].at >= 0.4
    notification = _created_for(buyer)
    assert notification.status == Notification.Status.SENT
    attempt = notification.delivery_attempts.get()
    assert attempt.outcome == DeliveryAttempt.Outcome.SENT
    assert [line.rsplit(" ", 1)[1] for line in attempt.http_log if "/messages" in line] == ["429", "200"]
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1


def test_long_429_is_scheduled_after_retry_after_not_waited(api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    fake_discord.rate_limit_next(BUYER_DISCORD_ID, retry_after=120.0)

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each

    notification = _created_for(buyer)
    assert notification.status == Notification.Status.PENDING
    attempt = notification.delivery_attempts.get()
    assert (attempt.outcome, attempt.http_status, attempt.retry_after_seconds) == ("transient", 429, 120.0)
    assert notification.next_attempt_at >= attempt.finished_at + datetime.timedelta(seconds=120)

    # Not due yet: a pass sends nothing.
    posts_before = len(fake_discord.message_posts_to(BUYER_DISCORD_ID))
    assert deliver_due_notifications() == 0
    assert len(fake_discord.message_posts_to(BUYER_DISCORD_ID)) == posts_before

    # retry_after has passed (the clock is moved by moving the due time, not by sleeping).
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
    assert deliver_due_notifications() == 1
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SENT
    assert _outcomes(notification) == ["transient", "sent"]
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1


def test_send_cut_short_during_a_rate_limit_wait_keeps_retry_after(
    api_client, buyer, seller, fake_discord, link_discord, settings
):
    link_discord(buyer, BUYER_DISCORD_ID)
    # The committing thread gives Discord little time; discord.py would wait 3 s for this rate limit.
    settings.DISCORD_SEND_TIMEOUT_SECONDS = 0.5
    fake_discord.rate_limit_next(BUYER_DISCORD_ID, retry_after=3.0)

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each

    notification = _created_for(buyer)
    attempt = notification.delivery_attempts.get()
    assert (attempt.outcome, attempt.detail, attempt.retry_after_seconds) == ("transient", "timed out", 3.0)
    assert notification.next_attempt_at >= attempt.finished_at + datetime.timedelta(seconds=3)
    assert deliver_due_notifications() == 0

    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
    deliver_due_notifications()
    notification.refresh_from_db()
    assert _outcomes(notification) == ["transient", "sent"]
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1


def test_user_who_blocks_dms_is_recorded_and_not_retried(
    api_client, buyer, seller, fake_discord, link_discord, settings
):
    settings.NOTIFY_RETRY_BASE_SECONDS = 0.0
    link_discord(buyer, BUYER_DISCORD_ID)
    link_discord(seller, SELLER_DISCORD_ID)
    fake_discord.block_dms(SELLER_DISCORD_ID)

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each
    for _ in range(3):
        deliver_due_notifications()

    notification = _created_for(seller)
    assert notification.status == Notification.Status.FAILED
    attempt = notification.delivery_attempts.get()
    assert (attempt.outcome, attempt.http_status, attempt.discord_code) == ("permanent", 403, 50007)
    assert "Cannot send messages to this user" in attempt.detail
    # One refused post and no retry.
    assert [p.status for p in fake_discord.message_posts_to(SELLER_DISCORD_ID)] == [403]
    assert fake_discord.dms_to(SELLER_DISCORD_ID) == []
    # The buyer is not affected.
    assert _created_for(buyer).status == Notification.Status.SENT


def test_server_errors_are_retried_with_backoff(api_client, buyer, seller, fake_discord, link_discord, settings):
    link_discord(buyer, BUYER_DISCORD_ID)
    fake_discord.server_error_next(BUYER_DISCORD_ID, status=503, times=2)

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each

    notification = _created_for(buyer)
    first = notification.delivery_attempts.get()
    assert (first.outcome, first.http_status) == ("transient", 503)
    # Backoff: the next try is due no sooner than the base delay.
    assert notification.next_attempt_at >= first.finished_at + datetime.timedelta(
        seconds=settings.NOTIFY_RETRY_BASE_SECONDS
    )
    assert deliver_due_notifications() == 0

    settings.NOTIFY_RETRY_BASE_SECONDS = 0.0
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
    deliver_due_notifications()
    deliver_due_notifications()
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SENT
    assert _outcomes(notification) == ["transient", "transient", "sent"]
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1


def test_timeout_is_retried_and_the_nonce_keeps_it_to_one_dm(
    api_client, buyer, seller, fake_discord, link_discord, settings
):
    link_discord(buyer, BUYER_DISCORD_ID)
    settings.NOTIFY_RETRY_BASE_SECONDS = 0.0
    settings.DISCORD_SEND_TIMEOUT_SECONDS = 0.5
    # Discord is slow, but does create the message after we gave up waiting.
    fake_discord.hang_next(BUYER_DISCORD_ID, seconds=1.5)

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each
    notification = _created_for(buyer)
    assert notification.delivery_attempts.get().detail == "timed out"

    deliver_due_notifications()
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SENT
    assert _outcomes(notification) == ["transient", "sent"]
    # Let the slow first request finish on the fake (bounded), then count what Discord created.
    deadline = time.monotonic() + 10
    while len(fake_discord.message_posts_to(BUYER_DISCORD_ID)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake_discord.message_posts_to(BUYER_DISCORD_ID)) == 2
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1


def test_dead_after_the_attempt_budget_then_ops_resend(api_client, buyer, seller, fake_discord, link_discord, settings):
    link_discord(buyer, BUYER_DISCORD_ID)
    settings.NOTIFY_RETRY_BASE_SECONDS = 0.0
    settings.NOTIFY_MAX_ATTEMPTS = 3
    fake_discord.server_error_next(BUYER_DISCORD_ID, status=503, times=100)

    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each
    for _ in range(5):
        deliver_due_notifications()

    notification = _created_for(buyer)
    assert notification.status == Notification.Status.DEAD
    assert _outcomes(notification) == ["transient"] * 3
    posts = len(fake_discord.message_posts_to(BUYER_DISCORD_ID))
    assert deliver_due_notifications() == 0
    assert len(fake_discord.message_posts_to(BUYER_DISCORD_ID)) == posts

    fake_discord.heal(BUYER_DISCORD_ID)
    call_command("resend_notifications", "--dead", *as_staff())

    notification.refresh_from_db()
    assert notification.status == Notification.Status.SENT
    assert _outcomes(notification) == ["transient"] * 3 + ["sent"]
    assert len([dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "created" in dm]) == 1


def test_a_sent_notification_is_not_resent(api_client, buyer, seller, fake_discord, link_discord, capsys):
    link_discord(buyer, BUYER_DISCORD_ID)
    create_escrow(api_client(buyer), seller=seller, accept=False)  # the deal proposed: one DM each
    notification = _created_for(buyer)

    call_command("resend_notifications", str(notification.pk), *as_staff())

    assert "only dead, failed or skipped" in capsys.readouterr().err
    assert len(fake_discord.dms_to(BUYER_DISCORD_ID)) == 1
    assert notification.delivery_attempts.count() == 1
