"""The live card rail through Stripe Checkout: the buyer's checkout link opens a Checkout Session (real SDK,
fake Stripe on loopback); only the signed, re-read `checkout.session.completed` webhook moves money state."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest
from django.test import Client

from apps.payments.models import CheckoutSession, PaymentArtifact, WebhookEvent
from tests.fakes.stripe_server import FakeStripe, signed_event
from tests.gateway.support import create_settled, settle
from tests.helpers import act, state_of
from tests.payments.support import assert_money_invariant, outbox_types, post_webhook

pytestmark = pytest.mark.django_db(transaction=True)

SELLER_ACCOUNT = "acct_1SellerCheckout0001"


@pytest.fixture(autouse=True)
def _public_base(settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "http://testserver"


def webhook(client: Any, event_type: str, obj: dict[str, Any], **kw: Any) -> Any:
    response = post_webhook(client, "stripe", *signed_event(event_type, obj, **kw))
    settle()
    return response


@pytest.fixture
def deal(fake_stripe: FakeStripe, api_client, buyer, seller) -> dict[str, Any]:
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    body = as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()
    link = body["payment"]["checkout_url"].removeprefix("http://testserver")
    return {"id": escrow_id, "as_buyer": as_buyer, "link": link, "body": body}


def start(deal: dict[str, Any]) -> str:
    response = Client().post(deal["link"])
    assert response.status_code == 302, response.content
    return response["Location"]


def session_of(fake: FakeStripe, url: str) -> dict[str, Any]:
    [session] = [s for s in fake.of_kind("checkout.session") if s["url"] == url]
    return session


def test_the_page_offers_stripe_checkout_and_a_get_opens_nothing(deal, fake_stripe):
    page = Client().get(deal["link"])

    assert page.status_code == 200
    html = page.content.decode()
    assert "149.99 USD" in html and "Continue to payment" in html
    assert 'name="card_number"' not in html  # card data is entered on Stripe's page, never ours
    assert fake_stripe.of_kind("checkout.session") == []


def test_paying_goes_to_stripe_and_the_webhook_funds_the_escrow(deal, fake_stripe, api_client, seller):
    url = start(deal)

    session = session_of(fake_stripe, url)
    [call] = [r for r in fake_stripe.requests if r.path == "/v1/checkout/sessions"]
    assert call.params["line_items[0][price_data][unit_amount]"] == "14999"
    assert call.params["metadata[escrow_id]"] == deal["id"]
    assert call.params["payment_intent_data[metadata][escrow_id]"] == deal["id"]
    assert call.params["payment_intent_data[transfer_group]"] == deal["id"]
    assert call.idempotency_key and call.idempotency_key.startswith("checkout-")
    assert urlparse(session["success_url"]).path.endswith(deal["id"])
    assert session["success_url"] == session["cancel_url"]
    deadline = deal["body"]["funding_deadline"]
    assert session["expires_at"] <= int(__import__("datetime").datetime.fromisoformat(deadline).timestamp())

    # The buyer pays on Stripe's page and comes back: the redirect moves nothing.
    paid = fake_stripe.pays_at_checkout(session["id"])
    assert Client().get(urlparse(session["success_url"]).path).status_code in (200, 302, 404)
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"

    response = webhook(deal["as_buyer"], "checkout.session.completed", paid)
    assert response.status_code == 200 and response.json()["status"] == "processed"
    assert state_of(deal["as_buyer"], deal["id"]) == "FUNDS_HELD"
    artifact = PaymentArtifact.objects.get(escrow_id=deal["id"], kind="payment")
    original = artifact.raw["replaced_payment_intent"]
    assert artifact.provider_id == paid["payment_intent"] != original
    assert fake_stripe.objects[original]["status"] == "canceled"  # it cannot be paid as well
    assert CheckoutSession.objects.get(session_id=session["id"]).status == "complete"
    assert assert_money_invariant(deal["id"]).received_minor == 14999

    # Stripe also sends payment_intent.succeeded for the session's intent, and redelivers: counted once.
    intent = fake_stripe.objects[paid["payment_intent"]]
    assert webhook(deal["as_buyer"], "payment_intent.succeeded", intent).status_code == 200
    assert webhook(deal["as_buyer"], "checkout.session.completed", paid).status_code == 200
    assert outbox_types(deal["id"]).count("PaymentSucceeded") == 1

    # The payout leaves from the charge Checkout made.
    as_seller = api_client(seller)
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    assert (
        as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json").status_code
        == 200
    )
    act(as_seller, deal["id"], "deliver")
    act(deal["as_buyer"], deal["id"], "release")
    settle()
    [transfer] = fake_stripe.of_kind("transfer")
    assert transfer["source_transaction"] == intent["latest_charge"]
    assert webhook(deal["as_buyer"], "transfer.created", transfer).status_code == 200
    assert state_of(deal["as_buyer"], deal["id"]) == "RELEASED"
    assert_money_invariant(deal["id"])


def test_a_second_click_reuses_the_open_session(deal, fake_stripe):
    assert start(deal) == start(deal)
    assert len(fake_stripe.of_kind("checkout.session")) == 1
    assert CheckoutSession.objects.filter(escrow_id=deal["id"]).count() == 1


def test_a_session_snapshot_stripe_does_not_confirm_moves_nothing(deal, fake_stripe):
    session = session_of(fake_stripe, start(deal))
    forged = {
        **fake_stripe.public(session["id"]),
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": "pi_fakeforged",
    }

    response = webhook(deal["as_buyer"], "checkout.session.completed", forged)

    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"
    assert "PaymentSucceeded" not in outbox_types(deal["id"])


def test_an_unsigned_or_stranger_session_event_changes_nothing(deal, fake_stripe):
    session = fake_stripe.pays_at_checkout(session_of(fake_stripe, start(deal))["id"])
    forged = post_webhook(
        deal["as_buyer"], "stripe", *signed_event("checkout.session.completed", session, secret="whsec_wrong")
    )
    assert forged.status_code == 400
    stranger = {**session, "id": "cs_test_notours0001"}
    calls = len(fake_stripe.requests)
    assert webhook(deal["as_buyer"], "checkout.session.completed", stranger).json()["status"] == "ignored"
    assert len(fake_stripe.requests) == calls  # no call to Stripe about someone else's session
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"
    assert WebhookEvent.objects.filter(status="processed").count() == 0


def test_a_payment_after_the_escrow_was_funded_is_counted_for_ops(deal, fake_stripe):
    first = session_of(fake_stripe, start(deal))
    paid = fake_stripe.pays_at_checkout(first["id"])
    # A second session opened before the first was paid (another tab), paid as well.
    CheckoutSession.objects.filter(session_id=first["id"]).update(status="expired")
    second = session_of(fake_stripe, start(deal))
    assert second["id"] != first["id"]
    also_paid = fake_stripe.pays_at_checkout(second["id"])

    assert webhook(deal["as_buyer"], "checkout.session.completed", paid).status_code == 200
    assert webhook(deal["as_buyer"], "checkout.session.completed", also_paid).status_code == 200

    assert outbox_types(deal["id"]).count("PaymentSucceeded") == 2
    escrow = assert_money_invariant(deal["id"])
    assert escrow.received_minor == 2 * 14999 and escrow.attention == "unexpected_payment"


def test_stripe_unreachable_is_said_in_words_and_records_nothing(deal, fake_stripe):
    fake_stripe.fail_next("/v1/checkout/sessions", 500)

    response = Client().post(deal["link"])

    assert response.status_code == 503
    assert re.search(r"unavailable right now", response.content.decode())
    assert CheckoutSession.objects.count() == 0
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"


def test_cancelling_the_deal_closes_its_open_checkout_page(deal, fake_stripe):
    session = session_of(fake_stripe, start(deal))

    assert act(deal["as_buyer"], deal["id"], "cancel").status_code == 202
    settle()

    assert fake_stripe.objects[session["id"]]["status"] == "expired"
    assert CheckoutSession.objects.get(session_id=session["id"]).status == "expired"
    assert "not awaiting payment" in Client().get(deal["link"]).content.decode()


def test_a_session_paid_before_the_cancel_is_left_to_its_webhook(deal, fake_stripe):
    from apps.outbox.models import DeadLetter

    paid = fake_stripe.pays_at_checkout(session_of(fake_stripe, start(deal))["id"])

    assert act(deal["as_buyer"], deal["id"], "cancel").status_code == 202
    settle()

    assert fake_stripe.objects[paid["id"]]["status"] == "complete"  # Stripe would not expire it
    assert DeadLetter.objects.count() == 0
    # The money that did arrive is counted, never dropped; the escrow puts it in front of ops.
    assert webhook(deal["as_buyer"], "checkout.session.completed", paid).status_code == 200
    escrow = assert_money_invariant(deal["id"])
    assert escrow.received_minor == 14999 and escrow.state == "CANCELLED" and escrow.attention
