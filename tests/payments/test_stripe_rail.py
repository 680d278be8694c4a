"""Stripe end to end, with PAYMENTS_PROVIDER=live: the real SDK against a fake Stripe on loopback, webhooks
signed with Stripe's scheme and posted to the public endpoint."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.escrow.models import Escrow
from apps.outbox.models import OutboxMessage
from apps.payments.models import PaymentArtifact, WaitingPayout, WebhookEvent
from tests.fakes.stripe_server import FakeStripe, signed_event
from tests.helpers import act, as_staff, create_escrow, state_of
from tests.payments.support import assert_money_invariant, outbox_types, post_webhook

pytestmark = pytest.mark.django_db(transaction=True)

SELLER_ACCOUNT = "acct_1SellerFake000001"


def webhook(client: APIClient, body: bytes, headers: dict[str, str]) -> Any:
    return post_webhook(client, "stripe", body, headers)


def intent_of(fake: FakeStripe, escrow_id: str) -> dict[str, Any]:
    [intent] = [pi for pi in fake.of_kind("payment_intent") if pi["metadata"].get("escrow_id") == escrow_id]
    return intent


def funded_escrow(fake: FakeStripe, client: APIClient, seller: Any, amount: str = "149.99") -> str:
    escrow_id = create_escrow(client, seller=seller, amount=amount)["escrow_id"]
    paid = fake.buyer_pays(intent_of(fake, escrow_id)["id"])
    assert webhook(client, *signed_event("payment_intent.succeeded", paid)).status_code == 200
    assert state_of(client, escrow_id) == "FUNDS_HELD"
    return escrow_id


# --- paying in -------------------------------------------------------------------------------------------


def test_creating_an_escrow_makes_one_payment_intent_keyed_by_the_command(fake_stripe, api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="149.99")["escrow_id"]

    [call] = fake_stripe.created("payment_intents")
    command = OutboxMessage.objects.get(aggregate_id=escrow_id, type__endswith="CreatePaymentIntent")
    assert call.idempotency_key == f"payment-{command.event_id}"
    assert call.params["amount"] == "14999" and call.params["currency"] == "usd"
    assert call.params["capture_method"] == "automatic"
    assert call.params["metadata[escrow_id]"] == escrow_id and call.params["transfer_group"] == escrow_id
    intent = intent_of(fake_stripe, escrow_id)
    detail = as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()
    checkout_url = detail["payment"].pop("checkout_url")
    assert detail["payment"] == {
        "provider": "stripe",
        "status": "pending",
        "client_secret": intent["client_secret"],
        "deposit_address": None,
    }
    assert "/checkout/" in checkout_url
    assert "payment" not in api_client(seller).get(f"/api/v1/escrows/{escrow_id}").json()
    assert_money_invariant(escrow_id)


def test_the_stripe_client_is_kept_but_a_key_rotation_applies_to_the_next_call(
    fake_stripe, api_client, buyer, seller, settings
):
    """The client (and its connections) is kept per process, not built per call, yet a new secret key in
    the settings is what the very next request carries."""
    from apps.payments.providers import stripe as stripe_provider

    as_buyer = api_client(buyer)
    create_escrow(as_buyer, seller=seller)
    client = stripe_provider._client()
    create_escrow(as_buyer, seller=seller)
    assert stripe_provider._client() is client
    settings.STRIPE_SECRET_KEY = "sk_test_rotated"
    create_escrow(as_buyer, seller=seller)
    assert stripe_provider._client() is not client
    keys = [call.authorization for call in fake_stripe.created("payment_intents")]
    assert keys == ["Bearer sk_test_fake", "Bearer sk_test_fake", "Bearer sk_test_rotated"]


def test_transient_stripe_errors_are_retried_with_the_same_key(fake_stripe, api_client, buyer, seller):
    """A 429 is answered before Stripe runs the request and is not saved for the key, so the same key
    sent again is carried out. A 500 is saved and replayed (Stripe's "Idempotent requests"): the retry
    gets the same 500, looks the intent up, finds none, and only then uses the next key."""
    fake_stripe.fail_next(
        "/v1/payment_intents",
        429,
        {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"},
    )
    fake_stripe.fail_next("/v1/payment_intents", 500)
    escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]

    calls = [r for r in fake_stripe.requests if r.path == "/v1/payment_intents"]
    [first_key] = {c.idempotency_key for c in calls[:3]}
    assert [(c.status, c.replayed) for c in calls] == [(429, False), (500, False), (500, True), (200, False)]
    assert calls[3].idempotency_key == f"{first_key}-retry1"
    searches = [r for r in fake_stripe.requests if r.path == "/v1/payment_intents/search"]
    assert len(searches) == 2  # after each 500, before any new key
    [intent] = fake_stripe.of_kind("payment_intent")
    assert intent["metadata"]["idempotency_key"] == first_key
    [artifact] = PaymentArtifact.objects.filter(escrow_id=escrow_id)
    assert artifact.provider_id == intent["id"] and artifact.idempotency_key == first_key


def test_a_refused_payment_intent_is_a_payment_failure_not_a_retry(fake_stripe, api_client, buyer, seller):
    fake_stripe.fail_next(
        "/v1/payment_intents",
        400,
        {"type": "invalid_request_error", "param": "currency", "message": "Invalid currency: usd"},
    )
    escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]

    assert len([r for r in fake_stripe.requests if r.path == "/v1/payment_intents"]) == 1
    assert "PaymentFailed" in outbox_types(escrow_id)
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id).exists()
    assert state_of(api_client(buyer), escrow_id) == "AWAIT_FUNDS"


def test_a_signed_payment_succeeded_holds_the_funds(fake_stripe, api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.received_minor, escrow.held_minor) == (14999, 14999)
    # The object was re-read from Stripe before it was trusted.
    intent_id = intent_of(fake_stripe, escrow_id)["id"]
    assert any(r.method == "GET" and r.path == f"/v1/payment_intents/{intent_id}" for r in fake_stripe.requests)


def test_a_stale_snapshot_is_checked_against_stripe(fake_stripe, api_client, buyer, seller):
    """The event claims success but Stripe says the intent is still unpaid: Stripe wins."""
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    claimed = {**intent_of(fake_stripe, escrow_id), "status": "succeeded", "amount_received": 14999}

    response = webhook(as_buyer, *signed_event("payment_intent.succeeded", claimed))

    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert state_of(as_buyer, escrow_id) == "AWAIT_FUNDS"
    assert "PaymentSucceeded" not in outbox_types(escrow_id)
    assert assert_money_invariant(escrow_id).received_minor == 0


def test_an_amount_mismatch_goes_to_ops_and_holds_nothing_for_the_trade(fake_stripe, api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    paid = fake_stripe.buyer_pays(intent_of(fake_stripe, escrow_id)["id"], amount=10000)

    assert webhook(as_buyer, *signed_event("payment_intent.succeeded", paid)).status_code == 200

    escrow = assert_money_invariant(escrow_id)
    assert escrow.state == "AWAIT_FUNDS" and escrow.attention == "payment_amount_mismatch"


# --- webhooks that must change nothing ---------------------------------------------------------------------


@pytest.mark.parametrize("tamper", ["forged", "unsigned", "stale", "other_secret"])
def test_bad_webhooks_get_400_and_change_nothing(fake_stripe, api_client, buyer, seller, tamper):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    paid = fake_stripe.buyer_pays(intent_of(fake_stripe, escrow_id)["id"])
    if tamper == "stale":
        body, headers = signed_event("payment_intent.succeeded", paid, timestamp=int(time.time()) - 301)
    elif tamper == "other_secret":
        body, headers = signed_event("payment_intent.succeeded", paid, secret="whsec_another_endpoint")
    else:
        body, headers = signed_event("payment_intent.succeeded", paid)
        if tamper == "forged":
            body = body.replace(b'"amount":14999', b'"amount":99999')
        else:
            headers = {}
    before = OutboxMessage.objects.count()

    response = webhook(as_buyer, body, headers)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    assert OutboxMessage.objects.count() == before
    assert state_of(as_buyer, escrow_id) == "AWAIT_FUNDS"
    assert PaymentArtifact.objects.get(escrow_id=escrow_id).status == "pending"
    assert WebhookEvent.objects.get().status == "rejected"
    assert assert_money_invariant(escrow_id).received_minor == 0


def test_a_duplicate_webhook_changes_nothing(fake_stripe, api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    paid = fake_stripe.buyer_pays(intent_of(fake_stripe, escrow_id)["id"])
    body, headers = signed_event("payment_intent.succeeded", paid)
    assert webhook(as_buyer, body, headers).status_code == 200
    before = OutboxMessage.objects.count()

    again = webhook(as_buyer, body, headers)

    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert OutboxMessage.objects.count() == before
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.received_minor) == ("FUNDS_HELD", 14999)


def test_an_unknown_payment_intent_is_acknowledged_and_ignored(fake_stripe, api_client, buyer):
    stranger_intent = {
        "id": "pi_not_ours_123",
        "object": "payment_intent",
        "amount": 5000,
        "amount_received": 5000,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {},
    }
    before = OutboxMessage.objects.count()

    response = webhook(api_client(), *signed_event("payment_intent.succeeded", stranger_intent))

    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert OutboxMessage.objects.count() == before
    assert fake_stripe.requests == []  # nothing is asked of Stripe about someone else's object


# --- paying out and refunding ------------------------------------------------------------------------------


def test_release_makes_one_transfer_of_the_amount_minus_the_fee(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    assert (
        as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json").status_code
        == 200
    )
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller, amount="149.99")
    assert act(as_seller, escrow_id, "deliver").status_code == 202

    assert act(as_buyer, escrow_id, "release").status_code == 202

    [call] = fake_stripe.created("transfers")
    fee = Escrow.objects.get(pk=escrow_id).fee_bps * 14999 // 10000
    intent = intent_of(fake_stripe, escrow_id)
    assert call.params["amount"] == str(14999 - fee) and call.params["destination"] == SELLER_ACCOUNT
    assert call.params["source_transaction"] == intent["latest_charge"]
    assert call.params["transfer_group"] == escrow_id
    assert call.idempotency_key.startswith("transfer-")
    assert state_of(as_buyer, escrow_id) == "RELEASING"
    assert assert_money_invariant(escrow_id).held_minor == 14999

    [transfer] = fake_stripe.of_kind("transfer")
    assert webhook(as_buyer, *signed_event("transfer.created", transfer)).status_code == 200

    escrow = assert_money_invariant(escrow_id)
    assert escrow.state == "RELEASED"
    assert (escrow.paid_out_minor, escrow.fee_minor, escrow.held_minor) == (
        transfer["amount"],
        14999 - transfer["amount"],
        0,
    )
    assert len(fake_stripe.created("transfers")) == 1


def test_a_seller_without_a_destination_gets_paid_once_they_register(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")

    assert act(as_buyer, escrow_id, "release").status_code == 202

    # Nothing went out, nothing is lost, and ops can see why.
    assert fake_stripe.created("transfers") == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", 14999, "transfer_failed")
    assert "awaiting payout destination" in escrow.attention_detail
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "waiting"
    assert as_seller.get("/api/v1/payout-destination").json()["waiting_payouts"] == 1

    fake_stripe.accounts.add(SELLER_ACCOUNT)
    registered = as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json")

    assert registered.status_code == 200 and registered.json()["waiting_payouts"] == 0
    [call] = fake_stripe.created("transfers")
    assert call.idempotency_key == WaitingPayout.objects.get(escrow_id=escrow_id).idempotency_key
    [transfer] = fake_stripe.of_kind("transfer")
    webhook(as_buyer, *signed_event("transfer.created", transfer))
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASED", 0, "")


def test_a_transfer_stripe_refuses_keeps_the_money_held_for_ops(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    # Verified when registered, then closed: by release time Stripe no longer knows the account.
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    assert (
        as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json").status_code
        == 200
    )
    fake_stripe.accounts.discard(SELLER_ACCOUNT)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")

    act(as_buyer, escrow_id, "release")

    assert len([r for r in fake_stripe.requests if r.path == "/v1/transfers"]) == 1  # refused, not retried
    assert fake_stripe.of_kind("transfer") == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", 14999, "transfer_failed")
    assert "No such destination" in escrow.attention_detail
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").exists()


def test_a_refund_makes_one_refund_and_settles_on_charge_refunded(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)

    assert act(as_seller, escrow_id, "cancel").status_code == 202

    [call] = fake_stripe.created("refunds")
    intent = intent_of(fake_stripe, escrow_id)
    assert call.params["payment_intent"] == intent["id"] and call.params["amount"] == "14999"
    assert call.idempotency_key.startswith("refund-")
    assert state_of(as_buyer, escrow_id) == "REFUNDING"
    charge = {
        "id": intent["latest_charge"],
        "object": "charge",
        "payment_intent": intent["id"],
        "amount_refunded": 14999,
        "refunded": True,
    }

    body, headers = signed_event("charge.refunded", charge)
    assert webhook(as_buyer, body, headers).status_code == 200
    assert webhook(as_buyer, body, headers).json()["status"] == "duplicate"

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.refunded_minor, escrow.held_minor) == ("REFUNDED", 14999, 0)
    assert len(fake_stripe.created("refunds")) == 1
    assert outbox_types(escrow_id).count("RefundSucceeded") == 1


def test_a_timeout_is_an_unknown_outcome_settled_by_looking_the_intent_up(
    fake_stripe, api_client, buyer, seller, settings
):
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    fake_stripe.delay_next("/v1/payment_intents", 0.6)  # Stripe makes the intent, our client gives up

    escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]

    calls = [r for r in fake_stripe.requests if r.path == "/v1/payment_intents"]
    # Whether the lookup or a re-sent key finds it depends on the machine; one key, one object either way.
    assert len({c.idempotency_key for c in calls}) == 1
    assert any(r.path == "/v1/payment_intents/search" for r in fake_stripe.requests)
    assert len(fake_stripe.of_kind("payment_intent")) == 1
    artifact = PaymentArtifact.objects.get(escrow_id=escrow_id)
    assert artifact.provider_id == intent_of(fake_stripe, escrow_id)["id"]


def test_a_waiting_payout_whose_send_failed_is_sent_by_the_command(fake_stripe, api_client, buyer, seller):
    from django.core.management import call_command

    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    act(as_buyer, escrow_id, "release")
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    fake_stripe.fail_next("/v1/transfers", 503)

    as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json")

    waiting = WaitingPayout.objects.get(escrow_id=escrow_id)
    assert waiting.status == "waiting" and "503" in waiting.last_error
    assert fake_stripe.of_kind("transfer") == []

    call_command("send_waiting_payouts", *as_staff())

    [transfer] = fake_stripe.of_kind("transfer")
    transfer_calls = [r for r in fake_stripe.requests if r.method == "POST" and r.path == "/v1/transfers"]
    assert len({c.idempotency_key for c in transfer_calls}) == 1
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "sent"
    call_command("send_waiting_payouts", *as_staff())  # nothing left: no second transfer
    assert len(fake_stripe.created("transfers")) == 1
    webhook(as_buyer, *signed_event("transfer.created", transfer))
    assert assert_money_invariant(escrow_id).state == "RELEASED"


def test_a_failure_delivered_after_the_card_succeeded_changes_nothing(fake_stripe, api_client, buyer, seller):
    """Out of order: Stripe sends the earlier payment_failed after the retry succeeded."""
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    intent = intent_of(fake_stripe, escrow_id)
    failed_snapshot = {**intent, "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
    succeeded = fake_stripe.buyer_pays(intent["id"])

    late = webhook(as_buyer, *signed_event("payment_intent.payment_failed", failed_snapshot))
    on_time = webhook(as_buyer, *signed_event("payment_intent.succeeded", succeeded))

    assert late.json()["status"] == "ignored" and on_time.json()["status"] == "processed"
    assert "PaymentFailed" not in outbox_types(escrow_id)
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor) == ("FUNDS_HELD", 14999)


def test_a_payment_in_another_currency_goes_to_ops(fake_stripe, api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    paid = fake_stripe.buyer_pays(intent_of(fake_stripe, escrow_id)["id"], currency="eur")

    assert webhook(as_buyer, *signed_event("payment_intent.succeeded", paid)).status_code == 200

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.received_minor, escrow.attention) == ("AWAIT_FUNDS", 0, "payment_currency_mismatch")


def test_a_chargeback_freezes_the_escrow_and_no_transfer_goes_out(fake_stripe, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json")
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    intent = intent_of(fake_stripe, escrow_id)
    dispute = {
        "id": "dp_fake0001",
        "object": "dispute",
        "amount": 14999,
        "currency": "usd",
        "charge": intent["latest_charge"],
        "payment_intent": intent["id"],
        "reason": "fraudulent",
    }

    assert webhook(as_buyer, *signed_event("charge.dispute.created", dispute)).status_code == 200
    act(as_seller, escrow_id, "deliver")
    release = act(as_buyer, escrow_id, "release")

    assert release.status_code == 409
    assert fake_stripe.created("transfers") == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("DISPUTED", 14999, "chargeback")
