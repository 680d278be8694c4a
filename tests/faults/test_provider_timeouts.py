"""Stripe answering slower than the client waits (PAYMENTS_PROVIDER=live, the real SDK against the fake
Stripe on loopback). The fake still does the work before it answers late, as Stripe does, so a retry
under a NEW key would move money twice: a timeout is an unknown outcome, settled by looking the object up
(transfers by transfer_group, refunds by payment_intent), and otherwise by the first key again, whose
answer Stripe replays. (tests/payments/test_stripe_rail.py covers a slow PaymentIntent; these cover the
money going out.)"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from apps.escrow.models import Escrow
from apps.outbox.models import DeadLetter
from apps.outbox.retry import replay_dead_letter
from apps.payments.models import PaymentArtifact
from tests.fakes.stripe_server import FakeStripe, signed_event
from tests.faults.support import assert_records_agree
from tests.helpers import act
from tests.payments.test_stripe_rail import SELLER_ACCOUNT, funded_escrow, webhook
from tests.properties.figures import record_figures

pytestmark = pytest.mark.django_db(transaction=True)

FIGURES: Counter[str] = Counter()
TIMEOUT, LATE = 0.3, 0.6  # the fake answers after LATE seconds; the client gives up after TIMEOUT


def _calls(fake: FakeStripe, path: str) -> list[Any]:
    return [r for r in fake.requests if r.path == path and r.method == "POST"]


def _ready_to_release(fake: FakeStripe, api_client: Any, buyer: Any, seller: Any) -> tuple[Any, str]:
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    fake.accounts.add(SELLER_ACCOUNT)
    assert (
        as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json").status_code
        == 200
    )
    escrow_id = funded_escrow(fake, as_buyer, seller)
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    return as_buyer, escrow_id


def _count(kind: str, fake: FakeStripe, path: str) -> None:
    FIGURES["provider calls timed out"] += sum(1 for c in _calls(fake, path)) - 1
    FIGURES[f"{kind} timeouts survived"] += 1
    record_figures("provider timeouts", dict(FIGURES))


def test_a_transfer_that_times_out_is_retried_with_its_key_and_made_once(
    fake_stripe, api_client, buyer, seller, settings
):
    settings.STRIPE_TIMEOUT_SECONDS = TIMEOUT
    as_buyer, escrow_id = _ready_to_release(fake_stripe, api_client, buyer, seller)
    fake_stripe.delay_next("/v1/transfers", LATE)

    assert act(as_buyer, escrow_id, "release").status_code == 202

    calls = _calls(fake_stripe, "/v1/transfers")
    # Whether the lookup or the first key re-sent finds it depends on the machine: one key either way.
    assert len({c.idempotency_key for c in calls}) == 1
    assert any(r.method == "GET" and r.path == "/v1/transfers" for r in fake_stripe.requests), (
        "the timed-out call was meant to be settled by a lookup"
    )
    [transfer] = fake_stripe.of_kind("transfer")
    assert PaymentArtifact.objects.get(escrow_id=escrow_id, kind="transfer").provider_id == transfer["id"]
    assert webhook(as_buyer, *signed_event("transfer.created", transfer)).status_code == 200
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.paid_out_minor + escrow.fee_minor, escrow.held_minor) == ("RELEASED", 14999, 0)
    assert_records_agree(escrow_id)
    _count("transfer", fake_stripe, "/v1/transfers")


def test_a_refund_that_times_out_is_retried_with_its_key_and_made_once(
    fake_stripe, api_client, buyer, seller, settings
):
    settings.STRIPE_TIMEOUT_SECONDS = TIMEOUT
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    fake_stripe.delay_next("/v1/refunds", LATE)

    assert act(as_seller, escrow_id, "cancel", {"reason": "out of stock"}).status_code == 202

    calls = _calls(fake_stripe, "/v1/refunds")
    assert len({c.idempotency_key for c in calls}) == 1
    assert any(r.method == "GET" and r.path == "/v1/refunds" for r in fake_stripe.requests)
    assert len(fake_stripe.of_kind("refund")) == 1
    assert PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="refund").count() == 1
    assert Escrow.objects.get(pk=escrow_id).state == "REFUNDING"
    assert_records_agree(escrow_id)
    _count("refund", fake_stripe, "/v1/refunds")


def test_timeouts_outlasting_every_retry_dead_letter_and_the_replay_pays_once(
    fake_stripe, api_client, buyer, seller, settings
):
    """Stripe made the transfer on the first call but every answer came too late, the lookups' too: the
    bus gives up and dead-letters the command with the money still held. The replay (after the outage)
    uses the same key, gets Stripe's stored answer, and records the one transfer that exists."""
    settings.STRIPE_TIMEOUT_SECONDS = TIMEOUT
    settings.BUS_MAX_ATTEMPTS = 3
    as_buyer, escrow_id = _ready_to_release(fake_stripe, api_client, buyer, seller)
    for _ in range(settings.BUS_MAX_ATTEMPTS):
        fake_stripe.delay_next("/v1/transfers", LATE, method="POST")
        fake_stripe.fail_next("/v1/transfers", 503, method="GET")  # the lookup after it learns nothing

    assert act(as_buyer, escrow_id, "release").status_code == 202

    [dead] = DeadLetter.objects.filter(subscriber="payments", type="payments.v1.TransferToSeller")
    assert dead.attempts == settings.BUS_MAX_ATTEMPTS
    assert len(fake_stripe.of_kind("transfer")) == 1  # Stripe did it, we do not know yet
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").exists()
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.paid_out_minor) == ("RELEASING", 14999, 0)

    assert replay_dead_letter(dead) is True

    calls = _calls(fake_stripe, "/v1/transfers")
    assert len(calls) == settings.BUS_MAX_ATTEMPTS + 1 and len({c.idempotency_key for c in calls}) == 1
    [transfer] = fake_stripe.of_kind("transfer")
    assert PaymentArtifact.objects.get(escrow_id=escrow_id, kind="transfer").provider_id == transfer["id"]
    assert webhook(as_buyer, *signed_event("transfer.created", transfer)).status_code == 200
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.held_minor) == ("RELEASED", 0)
    assert_records_agree(escrow_id)
    _count("dead-lettered transfer", fake_stripe, "/v1/transfers")
