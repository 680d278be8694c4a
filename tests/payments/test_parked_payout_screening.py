"""A payout parked for a seller without a wallet, sent when the seller registers one that screening blocks:
nothing goes out, the escrow goes on compliance hold as a block at release does, and ops' review (lift or
refund) settles it without anything being paid twice."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client

from apps.escrow.models import Escrow
from apps.payments.models import WaitingPayout, WalletScreening
from apps.payments.providers.custodian import idempotency_uuid
from tests.helpers import act, as_staff
from tests.payments.support import assert_money_invariant, outbox_types
from tests.payments.test_compliance_hold import resolve
from tests.payments.test_custodian_rail import (
    AMOUNT,
    AMOUNT_MINOR,
    BUYER_WALLET,
    SELLER_WALLET,
    funded,
    settle_the_transfer,
)

pytestmark = pytest.mark.django_db(transaction=True)

TRANSFER = "/v1/w3s/developer/transactions/transfer"
CLEAN_WALLET = "0x4444444444444444444444444444444444444444"


def parked_then_blocked(fake_custodian, fake_screening, api_client, buyer, seller) -> str:
    """Given: a released USDC escrow whose payout is parked (no wallet yet); the seller then registers a
    wallet that Chainalysis identifies as sanctioned."""
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded(fake_custodian, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    assert act(as_buyer, escrow_id, "release").status_code == 202
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "waiting"
    fake_screening.sanctioned.add(SELLER_WALLET)

    registered = as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json")

    assert registered.status_code == 200
    return escrow_id


def test_a_parked_payout_to_a_blocked_wallet_holds_the_escrow_and_sends_nothing(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = parked_then_blocked(fake_custodian, fake_screening, api_client, buyer, seller)

    assert fake_custodian.keys(TRANSFER) == []
    payout = WaitingPayout.objects.get(escrow_id=escrow_id)
    assert payout.status == "blocked" and "OFAC" in payout.last_error
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.paid_out_minor) == ("RELEASING", AMOUNT_MINOR, 0)
    assert escrow.attention == "compliance_hold"
    # The wallet stays in payments' screening record (ops read it there); no message carries it.
    assert WalletScreening.objects.filter(escrow_id=escrow_id, address=SELLER_WALLET, allowed=False).exists()
    assert SELLER_WALLET not in escrow.attention_detail
    types = outbox_types(escrow_id)
    assert types.count("TransferFailed") == 2  # parked, then blocked
    assert types.count("WalletScreened") == 1 and types.count("EscrowComplianceHold") == 1
    assert types.index("WalletScreened") < types.index("EscrowComplianceHold")
    kept = WalletScreening.objects.get(escrow_id=escrow_id, purpose="payout", vendor="chainalysis")
    assert not kept.allowed and kept.raw["identifications"][0]["category"] == "sanctions"
    # Ops see the held payout next to the escrow on hold.
    staff.user_permissions.add(Permission.objects.get(codename="view_waitingpayout"))
    ops = Client()
    ops.force_login(staff)
    listing = ops.get("/admin/payments/waitingpayout/?status__exact=blocked")
    assert listing.status_code == 200 and str(escrow_id) in listing.content.decode()

    # Held for the review: neither the retry command nor a clean wallet registered now sends it.
    call_command("send_waiting_payouts", *as_staff())
    fake_screening.sanctioned.discard(SELLER_WALLET)
    api_client(seller).put("/api/v1/payout-destination", {"wallet_address": CLEAN_WALLET}, format="json")
    assert fake_custodian.keys(TRANSFER) == []
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "blocked"
    assert Escrow.objects.get(pk=escrow_id).attention == "compliance_hold"


def test_refund_after_review_pays_the_buyer_back_and_cancels_the_parked_payout(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = parked_then_blocked(fake_custodian, fake_screening, api_client, buyer, seller)

    resolve(escrow_id, "refund", note="seller wallet is on the OFAC list")

    [refund] = fake_custodian.posts(TRANSFER)
    assert refund.body["destinationAddress"] == BUYER_WALLET and refund.body["amounts"] == [AMOUNT]
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "cancelled"
    assert Escrow.objects.get(pk=escrow_id).state == "REFUNDING"
    settle_the_transfer(fake_custodian, api_client(buyer))
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.refunded_minor, escrow.paid_out_minor, escrow.held_minor) == (
        "REFUNDED",
        AMOUNT_MINOR,
        0,
        0,
    )

    # Nothing can pay the seller as well: a clean wallet and the retry command send nothing more.
    fake_screening.sanctioned.discard(SELLER_WALLET)
    api_client(seller).put("/api/v1/payout-destination", {"wallet_address": CLEAN_WALLET}, format="json")
    call_command("send_waiting_payouts", *as_staff())
    assert len(fake_custodian.outbound()) == 1
    assert_money_invariant(escrow_id)


def test_lift_after_review_sends_the_parked_payout_once_with_its_original_key(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = parked_then_blocked(fake_custodian, fake_screening, api_client, buyer, seller)
    fake_screening.sanctioned.discard(SELLER_WALLET)  # the vendor withdrew the identification

    resolve(escrow_id, "lift", note="false positive, withdrawn by the vendor")

    payout = WaitingPayout.objects.get(escrow_id=escrow_id)
    [sent] = fake_custodian.posts(TRANSFER)
    assert sent.body["destinationAddress"] == SELLER_WALLET
    assert uuid.UUID(sent.body["idempotencyKey"]) == uuid.UUID(idempotency_uuid(payout.idempotency_key))
    assert payout.status == "sent"
    settle_the_transfer(fake_custodian, api_client(buyer))
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.paid_out_minor + escrow.fee_minor, escrow.attention) == (
        "RELEASED",
        0,
        AMOUNT_MINOR,
        "",
    )
    call_command("send_waiting_payouts", *as_staff())
    assert len(fake_custodian.outbound()) == 1


def test_lift_while_the_vendors_still_block_the_wallet_holds_it_again(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = parked_then_blocked(fake_custodian, fake_screening, api_client, buyer, seller)

    resolve(escrow_id, "lift", note="looked like a false positive")

    assert fake_custodian.keys(TRANSFER) == []
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "blocked"
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", AMOUNT_MINOR, "compliance_hold")
    assert outbox_types(escrow_id).count("EscrowComplianceHold") == 2
