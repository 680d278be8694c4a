"""Idempotency-Key records expire IDEMPOTENCY_KEY_TTL_HOURS after the first request: the bus worker's tick
purges them, and the same key after that is a new request (a new command, not a replay of the old one)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone

from apps.escrow.models import Escrow
from apps.gateway.models import IdempotencyRecord
from apps.outbox.worker import BusWorker, registered_ticks
from tests.gateway.test_idempotency import body_for, post_create


@pytest.fixture
def purge_every_pass(settings: Any) -> Any:
    settings.IDEMPOTENCY_PURGE_EVERY_SECONDS = 0
    return settings


def age(key: str, hours: float) -> None:
    """The record for `key` was made `hours` ago (the test moves its clock, not ours)."""
    IdempotencyRecord.objects.filter(key=key).update(created_at=timezone.now() - datetime.timedelta(hours=hours))


def worker_pass() -> None:
    BusWorker(ticks=registered_ticks()).run_once()


def test_the_worker_purges_records_older_than_the_ttl_and_keeps_the_rest(api_client, buyer, seller, purge_every_pass):
    client = api_client(buyer)
    for key in ("old", "young"):
        assert post_create(client, body_for(seller), key).status_code == 202
    age("old", 24.5)
    age("young", 23.5)

    worker_pass()

    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["young"]
    assert Escrow.objects.count() == 2  # the purge touches nothing else


def test_the_ttl_is_a_setting(api_client, buyer, seller, purge_every_pass):
    purge_every_pass.IDEMPOTENCY_KEY_TTL_HOURS = 1
    client = api_client(buyer)
    for key in ("two-hours", "half-an-hour"):
        post_create(client, body_for(seller), key)
    age("two-hours", 2)
    age("half-an-hour", 0.5)

    worker_pass()

    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["half-an-hour"]


def test_the_same_key_after_the_purge_is_a_new_request(api_client, buyer, seller, purge_every_pass):
    client = api_client(buyer)
    first = post_create(client, body_for(seller), "order-9")
    age("order-9", 25)
    worker_pass()

    again = post_create(client, body_for(seller), "order-9")

    assert again.status_code == 202 and "Idempotent-Replayed" not in again
    assert again.json()["command_id"] != first.json()["command_id"]
    assert again.json()["escrow_id"] != first.json()["escrow_id"]
    assert Escrow.objects.count() == 2
    # And within the new record's lifetime the key replays the new answer.
    replay = post_create(client, body_for(seller), "order-9")
    assert replay["Idempotent-Replayed"] == "true" and replay.json() == again.json()
    assert Escrow.objects.count() == 2


def test_an_expired_record_not_yet_purged_does_not_replay_or_refuse(api_client, buyer, seller):
    client = api_client(buyer)
    first = post_create(client, body_for(seller), "order-10")
    age("order-10", 30)

    other_body = post_create(client, body_for(seller, amount="20.00"), "order-10")

    assert other_body.status_code == 202 and "Idempotent-Replayed" not in other_body  # not a 422 either
    assert other_body.json()["escrow_id"] != first.json()["escrow_id"]
    assert Escrow.objects.count() == 2
    assert IdempotencyRecord.objects.filter(key="order-10").count() == 1


def test_a_key_used_a_third_time_after_two_expiries_is_a_third_request(api_client, buyer, seller, purge_every_pass):
    client = api_client(buyer)
    ids = set()
    for _ in range(3):
        answer = post_create(client, body_for(seller), "order-11")
        assert answer.status_code == 202 and "Idempotent-Replayed" not in answer
        ids.add(answer.json()["command_id"])
        age("order-11", 48)
        worker_pass()

    assert len(ids) == 3 and Escrow.objects.count() == 3
