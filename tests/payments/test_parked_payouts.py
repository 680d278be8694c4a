"""A payout parked for a seller without a payout destination can never go out once the escrow gave the
money back instead: payments never sends more out of an escrow than came in."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from apps.outbox.apply import handle_with_dedupe
from apps.outbox.messages import PAYMENTS_COMMANDS
from apps.outbox.public import Delivery
from apps.outbox.registry import get_subscriber
from apps.payments.models import WaitingPayout
from proto.common.v1 import Money
from proto.payments import v1 as payments_v1
from tests.fakes.stripe_server import signed_event
from tests.helpers import act, create_escrow
from tests.payments.test_stripe_rail import (
    SELLER_ACCOUNT,
    assert_money_invariant,
    funded_escrow,
    intent_of,
    outbox_types,
    webhook,
)

pytestmark = pytest.mark.django_db(transaction=True)


def refund_from_escrow(escrow_id: str, amount_minor: int) -> bool:
    """Delivers an InitiateRefund to payments through the bus's consumer entry point, as the escrow
    sends it after a compliance review (full refund of what is held, the payout dropped)."""
    command = payments_v1.InitiateRefund(
        escrow_id=escrow_id, buyer_id=1, amount=Money(amount_minor=amount_minor, currency="USD")
    )
    delivery = Delivery(
        event_id=uuid.uuid4(),
        type="payments.v1.InitiateRefund",
        topic=PAYMENTS_COMMANDS,
        key=escrow_id,
        aggregate_id=escrow_id,
        aggregate_version=99,
        occurred_at=timezone.now(),
    )
    return handle_with_dedupe(get_subscriber("payments"), command, delivery)


def parked(fake_stripe, api_client, buyer, seller) -> str:
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    assert act(as_buyer, escrow_id, "release").status_code == 202
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "waiting"
    return escrow_id


def test_a_full_refund_cancels_the_parked_payout_and_registering_later_sends_nothing(
    fake_stripe, api_client, buyer, seller
):
    escrow_id = parked(fake_stripe, api_client, buyer, seller)

    assert refund_from_escrow(escrow_id, 14999)

    [refund] = fake_stripe.created("refunds")
    assert refund.params["amount"] == "14999"
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "cancelled"
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    registered = api_client(seller).put(
        "/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json"
    )
    assert registered.status_code == 200
    assert fake_stripe.created("transfers") == []


def test_a_refund_while_the_parked_payout_is_being_sent_is_refused(fake_stripe, api_client, buyer, seller):
    escrow_id = parked(fake_stripe, api_client, buyer, seller)
    # Given a sender has claimed the payout and its provider call is under way.
    WaitingPayout.objects.filter(escrow_id=escrow_id).update(status=WaitingPayout.Status.SENDING)

    assert refund_from_escrow(escrow_id, 14999)

    assert fake_stripe.created("refunds") == []
    assert outbox_types(escrow_id).count("RefundFailed") == 1
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "sending"


def test_a_split_pays_both_legs_even_when_the_seller_registers_late(fake_stripe, api_client, buyer, seller, staff):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    assert act(as_buyer, escrow_id, "dispute", {"reason": "one item of two missing"}).status_code == 202

    resolved = act(api_client(staff), escrow_id, "resolve", {"outcome": "split", "seller_amount": "100.00"})

    assert resolved.status_code == 202
    [refund] = fake_stripe.created("refunds")
    assert refund.params["amount"] == "4999"
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "waiting"
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json")
    [transfer_call] = fake_stripe.created("transfers")
    assert transfer_call.params["amount"] == "9750"  # 100.00 minus the 2.5% fee
    [transfer] = fake_stripe.of_kind("transfer")
    assert webhook(as_buyer, *signed_event("transfer.created", transfer)).status_code == 200
    escrow = assert_money_invariant(escrow_id)
    assert escrow.paid_out_minor + escrow.fee_minor == 10000


def test_an_overpayment_with_nothing_parked_is_refunded_in_full(fake_stripe, api_client, buyer, seller):
    """The budget above only guards parked payouts: a refund of money that arrived beyond what was asked
    (the artifact records the asked amount) must still go out."""
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="1.00")["escrow_id"]
    paid = fake_stripe.buyer_pays(intent_of(fake_stripe, escrow_id)["id"], amount=2106)
    assert webhook(as_buyer, *signed_event("payment_intent.succeeded", paid)).status_code == 200

    assert act(as_buyer, escrow_id, "cancel").status_code == 202

    [refund] = fake_stripe.created("refunds")
    assert refund.params["amount"] == "2106"
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.pending_refund_minor, escrow.attention) == (
        "REFUNDING",
        2106,
        "payment_amount_mismatch",
    )
    assert "RefundFailed" not in outbox_types(escrow_id)
