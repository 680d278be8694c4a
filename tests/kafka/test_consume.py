"""Apps split out of the web process and fed from Kafka: same handlers, same dedupe, same read models;
a poison message goes to the dead-letter topic and the consumer carries on."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from django.core.management import call_command

from apps.escrow.models import Escrow
from apps.notifications.models import EscrowParties, Notification
from apps.outbox import messages
from apps.outbox.drain import drain
from apps.outbox.kafka.consumer import AppConsumer
from apps.outbox.kafka.relay import OutboxRelay
from apps.outbox.kafka.replay import replay_outbox, replay_selection
from apps.outbox.models import OutboxMessage, ProcessedMessage, SubscriberCheckpoint
from apps.outbox.registry import get_subscriber
from apps.projections.models import EscrowView, TimelineEntry
from proto.escrow import v1 as escrow_v1
from tests.helpers import act, create_escrow, pay
from tests.kafka.broker import end_offsets, read_since

pytestmark = pytest.mark.kafka

SPLIT_OUT = ("projections", "notifications")


def drive_escrows(as_buyer: Any, as_seller: Any, seller: Any, catch_up: Callable[[], None] | None = None) -> list[str]:
    """A released escrow and a cancelled one, through the public API. The sandbox pay endpoint checks the
    buyer against the read model, so when projections run elsewhere it waits for `catch_up` first."""
    released = create_escrow(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    if catch_up is not None:
        catch_up()
    assert pay(as_buyer, released).status_code == 202
    assert act(as_seller, released, "deliver").status_code == 202
    assert act(as_buyer, released, "release").status_code == 202
    cancelled = create_escrow(as_buyer, seller=seller, amount="20.00")["escrow_id"]
    assert act(as_buyer, cancelled, "cancel").status_code == 202
    assert Escrow.objects.get(pk=released).state == "RELEASED"
    assert Escrow.objects.get(pk=cancelled).state == "CANCELLED"
    return [released, cancelled]


def read_models() -> dict[str, list[tuple[Any, ...]]]:
    return {
        "views": sorted(
            EscrowView.objects.values_list(
                "escrow_id",
                "state",
                "amount_minor",
                "currency",
                "paid_to_seller_minor",
                "fee_minor",
                "refunded_minor",
                "payout_pending",
                "refund_pending",
                "attention",
                "version",
                "updated_at",
            )
        ),
        "timeline": sorted(
            TimelineEntry.objects.values_list(
                "escrow_id", "version", "event_id", "type", "occurred_at", "actor_kind", "actor_id"
            )
        ),
        "notifications": sorted(Notification.objects.values_list("user_id", "escrow_id", "event_id", "kind", "text")),
    }


def test_split_out_apps_fed_from_kafka_build_the_same_read_models_and_notifications_as_in_process(
    kafka, fresh_group, settings, api_client, buyer, seller
):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["escrow", "payments"]  # the web process no longer feeds them
    groups = {app: fresh_group(app) for app in SPLIT_OUT}
    created = create_escrow(api_client(buyer), seller=seller)["escrow_id"]
    assert not EscrowView.objects.exists() and not Notification.objects.exists()  # not fed in-process
    applied = 0

    def catch_up() -> None:
        nonlocal applied
        call_command("relay_outbox", "--once", stdout=io.StringIO())
        out = io.StringIO()
        call_command("consume", "notifications", "--group", groups["notifications"], "--until-caught-up", stdout=out)
        assert "dead_lettered=0" in out.getvalue()
        stats = AppConsumer(app="projections", group_id=groups["projections"]).run(until_caught_up=True)
        assert stats.dead_lettered == 0
        applied += stats.applied

    catch_up()
    assert EscrowView.objects.get(escrow_id=created).state == "AWAIT_FUNDS"
    drive_escrows(api_client(buyer), api_client(seller), seller, catch_up)
    catch_up()
    assert applied == ProcessedMessage.objects.filter(subscriber="projections").count() > 0
    from_kafka = read_models()
    assert len(from_kafka["views"]) == 3 and from_kafka["notifications"]

    # The reference: the same outbox fed to the same handlers in-process, from scratch.
    EscrowView.objects.all().delete()
    TimelineEntry.objects.all().delete()
    Notification.objects.all().delete()
    EscrowParties.objects.all().delete()
    ProcessedMessage.objects.filter(subscriber__in=SPLIT_OUT).delete()
    SubscriberCheckpoint.objects.filter(subscriber__in=SPLIT_OUT).delete()
    drain(list(SPLIT_OUT))
    assert read_models() == from_kafka


def test_redelivered_and_replayed_messages_are_applied_once(kafka, fresh_group, settings, api_client, buyer, seller):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["escrow", "payments"]
    group = fresh_group("projections")
    first = AppConsumer(app="projections", group_id=group)

    def catch_up() -> None:
        OutboxRelay(servers=kafka).run(once=True)
        AppConsumer(app="projections", group_id=group).run(until_caught_up=True)

    released, _ = drive_escrows(api_client(buyer), api_client(seller), seller, catch_up)
    OutboxRelay(servers=kafka).run(once=True)
    first.run(until_caught_up=True)
    before = read_models()
    processed = ProcessedMessage.objects.filter(subscriber="projections").count()

    # Kafka lost data, so ops replay one escrow: every message arrives a second time.
    replayed = replay_outbox(rows=replay_selection(escrow_id=released), servers=kafka)
    assert replayed.published == OutboxMessage.objects.filter(aggregate_id=released).count()
    again = AppConsumer(app="projections", group_id=group).run(until_caught_up=True)

    assert first.stats.applied > 0
    assert again.applied == 0
    assert (
        again.duplicates
        == OutboxMessage.objects.filter(aggregate_id=released, type__in=get_subscriber("projections").types).count()
    )
    assert read_models() == before
    assert ProcessedMessage.objects.filter(subscriber="projections").count() == processed


async def _produce(servers: str, records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def test_poison_messages_go_to_the_dead_letter_topic_and_the_consumer_carries_on(
    kafka, fresh_group, settings, api_client, buyer, seller
):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["escrow", "payments"]
    group = fresh_group("projections")
    dlq = messages.ESCROW_EVENTS + ".dlq"
    since = end_offsets(kafka, [dlq])
    ghost, poison_event = str(uuid.uuid4()), uuid.uuid4()
    envelope = [
        ("event_id", str(poison_event).encode()),
        ("type", b"escrow.v1.EscrowDelivered"),
        ("aggregate_id", ghost.encode()),
        ("aggregate_version", b"3"),
        ("occurred_at", b"2026-01-01T00:00:00+00:00"),
    ]
    asyncio.run(
        _produce(
            kafka,
            [
                # a delivery for an escrow the read model has never seen: the handler fails every time
                (messages.ESCROW_EVENTS, ghost.encode(), bytes(escrow_v1.EscrowDelivered(escrow_id=ghost)), envelope),
                # no envelope at all: cannot even be decoded
                (messages.ESCROW_EVENTS, ghost.encode(), b"\x00garbage", []),
            ],
        )
    )
    dead_lettered = 0

    def catch_up() -> None:
        nonlocal dead_lettered
        OutboxRelay(servers=kafka).run(once=True)
        stats = AppConsumer(app="projections", group_id=group, max_attempts=3).run(until_caught_up=True)
        dead_lettered += stats.dead_lettered

    released, cancelled = drive_escrows(api_client(buyer), api_client(seller), seller, catch_up)
    catch_up()

    assert dead_lettered == 2
    assert EscrowView.objects.get(escrow_id=released).state == "RELEASED"
    assert EscrowView.objects.get(escrow_id=cancelled).state == "CANCELLED"
    assert not EscrowView.objects.filter(escrow_id=ghost).exists()
    assert not TimelineEntry.objects.filter(escrow_id=ghost).exists()
    assert not ProcessedMessage.objects.filter(event_id=poison_event).exists()
    dead = read_since(kafka, since)
    assert len(dead) == 2
    by_error = {dict(r.headers)["dlq.error"].decode(): dict(r.headers) for r in dead}
    failing = next(h for e, h in by_error.items() if "DoesNotExist" in e)
    assert failing["event_id"] == str(poison_event).encode() and failing["dlq.attempts"] == b"3"
    assert failing["dlq.subscriber"] == b"projections"
    assert any("missing envelope headers" in e for e in by_error)
    # The group moved past them: a second run finds nothing to do.
    assert AppConsumer(app="projections", group_id=group).run(until_caught_up=True).received == 0


def test_kafka_topics_creates_the_catalog_and_is_idempotent(kafka):
    first, second = io.StringIO(), io.StringIO()
    call_command("kafka_topics", "--partitions", "12", stdout=first)
    call_command("kafka_topics", "--partitions", "12", stdout=second)
    lines = second.getvalue().splitlines()
    assert len(lines) == 10
    assert all(line.startswith("exists ") and "partitions=12" in line for line in lines)
    assert any("escrow.events.v1.dlq" in line and "retention=30d" in line for line in lines)
    assert any(line.split()[1] == "escrow.commands.v1" and "retention=7d" in line for line in lines)
