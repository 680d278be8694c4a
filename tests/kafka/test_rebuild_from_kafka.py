"""A blue/green rebuild while the projections are consumed from Kafka (as deploy/compose.yaml runs them):
the bus checkpoint is empty there, so the rebuild replays what the live consumer has applied, catches up
with what it applies meanwhile, and flips to a copy equal to the live one; the consumer goes on into the
new colour without a dead letter."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from apps.outbox.kafka.consumer import AppConsumer
from apps.outbox.kafka.relay import OutboxRelay
from apps.outbox.models import SubscriberCheckpoint
from apps.projections.models import ActiveGeneration
from apps.projections.rebuild import projection_rebuild
from apps.projections.tables import active_tables
from tests.helpers import act, as_staff, create_escrow, pay

pytestmark = [pytest.mark.kafka, pytest.mark.postgres_only]


def live_models() -> dict[str, list[tuple[Any, ...]]]:
    tables = active_tables()
    return {
        "views": sorted(
            tables.view.objects.values_list(
                "escrow_id", "state", "amount_minor", "paid_to_seller_minor", "fee_minor", "refunded_minor", "version"
            )
        ),
        "timeline": sorted(tables.timeline.objects.values_list("escrow_id", "version", "event_id", "type")),
        "daily": sorted(
            tables.daily.objects.values_list(*[f.name for f in tables.daily._meta.fields if f.name != "id"])
        ),
    }


def test_a_rebuild_under_kafka_replays_what_the_consumer_applied_and_catches_up_before_the_flip(
    kafka, fresh_group, settings, api_client, buyer, seller
):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["escrow", "payments", "notifications"]  # projections: from Kafka
    group = fresh_group("projections")
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    consumed = {"dead_lettered": 0, "applied": 0}

    def catch_up() -> None:
        OutboxRelay(servers=kafka).run(once=True)
        stats = AppConsumer(app="projections", group_id=group).run(until_caught_up=True)
        consumed["dead_lettered"] += stats.dead_lettered
        consumed["applied"] += stats.applied

    # Given: two escrows, one released and one delivered, read models fed from Kafka only.
    released = create_escrow(as_buyer, seller=seller)["escrow_id"]
    delivered = create_escrow(as_buyer, seller=seller, amount="20.00")["escrow_id"]
    catch_up()
    for escrow_id in (released, delivered):
        assert pay(as_buyer, escrow_id).status_code == 202
        assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert act(as_buyer, released, "release").status_code == 202
    catch_up()
    assert not SubscriberCheckpoint.objects.filter(subscriber="projections", last_id__gt=0).exists()
    before_color = ActiveGeneration.objects.get_or_create(name="escrows")[0].color

    # When: a rebuild runs, and while it replays, the buyer releases the second escrow and the live
    # consumer applies that (the rebuild must catch up with it before the flip).
    moved = []

    def meanwhile(done: int, total: int) -> None:
        if not moved:
            moved.append(done)
            assert act(as_buyer, delivered, "release").status_code == 202
            catch_up()

    summary = projection_rebuild(progress=meanwhile)

    # Then: readers see the new colour, equal to what the live consumer built, new event included.
    assert moved and summary.to_color != before_color
    assert ActiveGeneration.objects.get(name="escrows").color == summary.to_color
    rebuilt = live_models()
    states = {str(row[0]): row[1] for row in rebuilt["views"]}
    assert states == {released: "RELEASED", delivered: "RELEASED"}
    assert as_buyer.get(f"/api/v1/escrows/{delivered}").json()["state"] == "RELEASED"

    # And the live consumer goes on into the new colour: a later event for an old escrow applies, with no
    # dead letter, and the new colour equals a second rebuild from what was applied.
    third = create_escrow(as_buyer, seller=seller, amount="30.00")["escrow_id"]
    catch_up()
    assert act(as_buyer, third, "cancel").status_code == 202
    catch_up()
    assert consumed["dead_lettered"] == 0 and consumed["applied"] > 0
    assert as_buyer.get(f"/api/v1/escrows/{third}").json()["state"] == "CANCELLED"
    live = live_models()
    out = io.StringIO()
    call_command("rebuild_projections", "--no-progress", *as_staff(), stdout=out)
    assert "replayed" in out.getvalue()
    assert live_models() == live
