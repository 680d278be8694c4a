"""Stripe's idempotency as Stripe gives it: the first answer for a key is saved and replayed, 500s
included, so an unknown outcome (a 5xx, a timeout) is settled by looking the object up, and a new key is
used only once Stripe has said, by replaying, that the first request finished without the object. Also
what Stripe refuses about money (a refund above what is left of the charge, a transfer above what is
available), mapped to our failure events. The real SDK against the fake, through the public API."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from apps.outbox.models import DeadLetter
from apps.payments.models import PaymentArtifact
from tests.fakes.stripe_server import FakeStripe, signed_event
from tests.helpers import act, state_of
from tests.payments.support import assert_money_invariant, outbox_types
from tests.payments.test_stripe_rail import SELLER_ACCOUNT, funded_escrow, intent_of, webhook

pytestmark = pytest.mark.django_db(transaction=True)


def posts(fake: FakeStripe, path: str) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path == path]


def delivered(fake: FakeStripe, api_client: Any, buyer: Any, seller: Any) -> tuple[str, Any]:
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    fake.accounts.add(SELLER_ACCOUNT)
    assert (
        as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json").status_code
        == 200
    )
    escrow_id = funded_escrow(fake, as_buyer, seller)
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    return escrow_id, as_buyer


def test_the_fake_replays_a_saved_500_like_stripe(fake_stripe: FakeStripe) -> None:
    fake_stripe.fail_next("/v1/payment_intents", 500)
    form = {"amount": "5000", "currency": "usd"}
    headers = {"Authorization": "Bearer sk_test_fake", "Idempotency-Key": "k-1"}

    first = requests.post(f"{fake_stripe.api_base}/v1/payment_intents", data=form, headers=headers, timeout=5)
    again = requests.post(f"{fake_stripe.api_base}/v1/payment_intents", data=form, headers=headers, timeout=5)
    other = requests.post(
        f"{fake_stripe.api_base}/v1/payment_intents",
        data=form,
        headers={**headers, "Idempotency-Key": "k-2"},
        timeout=5,
    )

    assert (first.status_code, again.status_code, other.status_code) == (500, 500, 200)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(fake_stripe.of_kind("payment_intent")) == 1


def test_a_500_after_stripe_made_the_transfer_is_found_and_not_sent_again(fake_stripe, api_client, buyer, seller):
    escrow_id, as_buyer = delivered(fake_stripe, api_client, buyer, seller)
    fake_stripe.fail_next("/v1/transfers", 500, after_the_work=True)

    assert act(as_buyer, escrow_id, "release").status_code == 202

    [call] = posts(fake_stripe, "/v1/transfers")  # one request: the lookup found what it left behind
    assert call.status == 500
    [transfer] = fake_stripe.of_kind("transfer")
    assert transfer["metadata"]["idempotency_key"] == call.idempotency_key
    [artifact] = PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer")
    assert (artifact.provider_id, artifact.idempotency_key) == (transfer["id"], call.idempotency_key)
    assert webhook(as_buyer, *signed_event("transfer.created", transfer)).status_code == 200
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor) == ("RELEASED", 0)
    assert not DeadLetter.objects.filter(aggregate_id=escrow_id).exists()


def test_a_500_that_made_nothing_is_replayed_then_the_transfer_goes_under_the_next_key(
    fake_stripe, api_client, buyer, seller
):
    escrow_id, as_buyer = delivered(fake_stripe, api_client, buyer, seller)
    fake_stripe.fail_next("/v1/transfers", 500)

    act(as_buyer, escrow_id, "release")

    calls = posts(fake_stripe, "/v1/transfers")
    key = calls[0].idempotency_key
    assert [(c.idempotency_key, c.status, c.replayed) for c in calls] == [
        (key, 500, False),
        (key, 500, True),
        (f"{key}-retry1", 200, False),
    ]
    lookups = [r for r in fake_stripe.requests if r.method == "GET" and r.path == "/v1/transfers"]
    assert [r.params["transfer_group"] for r in lookups] == [escrow_id, escrow_id]
    [transfer] = fake_stripe.of_kind("transfer")
    [artifact] = PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer")
    assert artifact.provider_id == transfer["id"]
    webhook(as_buyer, *signed_event("transfer.created", transfer))
    assert assert_money_invariant(escrow_id).state == "RELEASED"


def test_a_500_after_stripe_made_the_refund_is_found_and_not_sent_again(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    fake_stripe.fail_next("/v1/refunds", 500, after_the_work=True)

    assert act(as_seller, escrow_id, "cancel").status_code == 202

    assert [c.status for c in posts(fake_stripe, "/v1/refunds")] == [500]
    [refund] = fake_stripe.of_kind("refund")
    [artifact] = PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="refund")
    assert artifact.provider_id == refund["id"]
    assert state_of(as_buyer, escrow_id) == "REFUNDING"
    assert "RefundFailed" not in outbox_types(escrow_id)


def test_stripe_answering_500_to_every_key_creates_nothing_and_dead_letters(
    fake_stripe, api_client, buyer, seller, settings
):
    settings.BUS_MAX_ATTEMPTS = 5  # one fresh key per attempt, then all four replay
    escrow_id, as_buyer = delivered(fake_stripe, api_client, buyer, seller)
    for _ in range(20):
        fake_stripe.fail_next("/v1/transfers", 500, method="POST")

    act(as_buyer, escrow_id, "release")

    keys = {c.idempotency_key for c in posts(fake_stripe, "/v1/transfers")}
    assert len(keys) == 4  # the command's key and three successors, never more
    assert fake_stripe.of_kind("transfer") == []
    assert DeadLetter.objects.filter(aggregate_id=escrow_id).exists()
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor) == ("RELEASING", 14999)


# --- what Stripe refuses about money --------------------------------------------------------------------


def test_a_refund_above_what_is_left_of_the_charge_is_a_refund_failure(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    fake_stripe.refund_outside(intent_of(fake_stripe, escrow_id)["id"], 5000)

    act(as_seller, escrow_id, "cancel")

    [call] = posts(fake_stripe, "/v1/refunds")  # refused for good: not retried
    assert call.status == 400
    assert len(fake_stripe.of_kind("refund")) == 1  # only the one made outside
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("REFUNDING", 14999, "refund_failed")
    assert "amount_too_large" in escrow.attention_detail
    assert "RefundFailed" in outbox_types(escrow_id)
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="refund").exists()


def test_a_refund_of_a_charge_already_refunded_is_a_refund_failure(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    fake_stripe.refund_outside(intent_of(fake_stripe, escrow_id)["id"], 14999)

    act(as_seller, escrow_id, "cancel")

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.attention, escrow.held_minor) == ("refund_failed", 14999)
    assert "charge_already_refunded" in escrow.attention_detail
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="refund").exists()


def test_a_transfer_above_the_available_balance_is_a_transfer_failure(fake_stripe, api_client, buyer, seller):
    escrow_id, as_buyer = delivered(fake_stripe, api_client, buyer, seller)
    fake_stripe.refund_outside(intent_of(fake_stripe, escrow_id)["id"], 10000)

    act(as_buyer, escrow_id, "release")

    [call] = posts(fake_stripe, "/v1/transfers")
    assert call.status == 400
    assert fake_stripe.of_kind("transfer") == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", 14999, "transfer_failed")
    assert "balance_insufficient" in escrow.attention_detail
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").exists()
