"""A payout screening blocked at release (the seller's wallet was already registered) is held for the
compliance review: a lift sends it once, screened again, with the release's own idempotency key; a wallet
the vendors still block is held again; a refund after review pays the buyer back and the seller nothing."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client

from apps.escrow.models import Escrow
from apps.outbox import messages
from apps.outbox.apply import handle_with_dedupe
from apps.outbox.models import OutboxMessage
from apps.outbox.public import Delivery
from apps.outbox.registry import get_subscriber
from apps.payments.models import WaitingPayout
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


def blocked_at_release(fake_custodian, fake_screening, api_client, buyer, seller) -> str:
    """Given: a funded, delivered USDC escrow whose seller registered a wallet that TRM rates severe by the
    time the buyer releases: nothing is sent and the escrow is on compliance hold, RELEASING."""
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    assert (
        as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json").status_code == 200
    )
    escrow_id = funded(fake_custodian, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    fake_screening.severe.add(SELLER_WALLET)

    assert act(as_buyer, escrow_id, "release").status_code == 202

    assert fake_custodian.keys(TRANSFER) == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", AMOUNT_MINOR, "compliance_hold")
    return escrow_id


def release_transfer_key(escrow_id: str) -> str:
    """The idempotency key payments derives from the release's TransferToSeller command."""
    [command] = OutboxMessage.objects.filter(aggregate_id=escrow_id, type__endswith=".TransferToSeller")
    return f"transfer-{command.event_id}"


def test_lift_with_the_wallet_clear_sends_the_payout_once_with_the_release_key(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = blocked_at_release(fake_custodian, fake_screening, api_client, buyer, seller)
    fake_screening.severe.discard(SELLER_WALLET)  # the vendor re-rated the wallet

    resolve(escrow_id, "lift", note="false positive, re-rated by the vendor")

    [sent] = fake_custodian.posts(TRANSFER)
    assert sent.body["destinationAddress"] == SELLER_WALLET
    assert uuid.UUID(sent.body["idempotencyKey"]) == uuid.UUID(idempotency_uuid(release_transfer_key(escrow_id)))
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "sent"
    settle_the_transfer(fake_custodian, api_client(buyer))
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.paid_out_minor + escrow.fee_minor, escrow.attention) == (
        "RELEASED",
        0,
        AMOUNT_MINOR,
        "",
    )
    # Nothing else can send it again.
    call_command("send_waiting_payouts", *as_staff())
    assert len(fake_custodian.keys(TRANSFER)) == 1 and len(fake_custodian.outbound()) == 1


def test_lift_while_the_vendors_still_block_the_wallet_holds_it_again(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = blocked_at_release(fake_custodian, fake_screening, api_client, buyer, seller)

    resolve(escrow_id, "lift", note="looked like a false positive")

    assert fake_custodian.keys(TRANSFER) == []
    payout = WaitingPayout.objects.get(escrow_id=escrow_id)
    assert payout.status == "blocked" and SELLER_WALLET in payout.last_error
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", AMOUNT_MINOR, "compliance_hold")
    assert outbox_types(escrow_id).count("EscrowComplianceHold") == 2
    # Ops see the held payout next to the escrow on hold, and the hold can be reviewed again.
    staff.user_permissions.add(Permission.objects.get(codename="view_waitingpayout"))
    ops = Client()
    ops.force_login(staff)
    listing = ops.get("/admin/payments/waitingpayout/?status__exact=blocked")
    assert listing.status_code == 200 and str(escrow_id) in listing.content.decode()
    call_command("send_waiting_payouts", *as_staff())
    assert fake_custodian.keys(TRANSFER) == []


def test_refund_after_review_pays_the_buyer_back_and_the_seller_never(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = blocked_at_release(fake_custodian, fake_screening, api_client, buyer, seller)

    resolve(escrow_id, "refund", note="seller wallet linked to a mixer")

    [refund] = fake_custodian.posts(TRANSFER)
    assert refund.body["destinationAddress"] == BUYER_WALLET and refund.body["amounts"] == [AMOUNT]
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "cancelled"
    settle_the_transfer(fake_custodian, api_client(buyer))
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.refunded_minor, escrow.paid_out_minor, escrow.held_minor) == (
        "REFUNDED",
        AMOUNT_MINOR,
        0,
        0,
    )

    # The wallet clears later: still nothing goes to the seller.
    fake_screening.severe.discard(SELLER_WALLET)
    call_command("send_waiting_payouts", *as_staff())
    with pytest.raises(CommandError, match="refused"):
        resolve(escrow_id, "lift")
    assert [p.body["destinationAddress"] for p in fake_custodian.posts(TRANSFER)] == [BUYER_WALLET]
    assert_money_invariant(escrow_id)


def test_the_lift_delivered_twice_sends_one_transfer(fake_custodian, fake_screening, api_client, buyer, seller, staff):
    escrow_id = blocked_at_release(fake_custodian, fake_screening, api_client, buyer, seller)
    fake_screening.severe.discard(SELLER_WALLET)
    resolve(escrow_id, "lift", note="false positive")
    assert len(fake_custodian.keys(TRANSFER)) == 1
    [row] = OutboxMessage.objects.filter(aggregate_id=escrow_id, type__endswith=".EscrowComplianceHoldResolved")
    payments = get_subscriber("payments")
    event, delivery = messages.decode(row.type, row.payload), Delivery.of(row)

    # Delivered again as it was (at least once), and as a copy under a new envelope id that dedupe cannot
    # recognise: the payout is no longer held, so neither finds anything to send.
    assert handle_with_dedupe(payments, event, delivery) is False
    assert handle_with_dedupe(payments, event, dataclasses.replace(delivery, event_id=uuid.uuid4())) is True

    assert len(fake_custodian.keys(TRANSFER)) == 1
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "sent"
    settle_the_transfer(fake_custodian, api_client(buyer))
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.paid_out_minor + escrow.fee_minor) == ("RELEASED", AMOUNT_MINOR)
    assert len(fake_custodian.outbound()) == 1
    assert Escrow.objects.get(pk=escrow_id).attention == ""


# --- a lift whose payout then fails for another reason ------------------------------------------------------


def test_a_payout_refused_after_a_lift_puts_the_escrow_in_front_of_ops_and_is_not_kept(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = blocked_at_release(fake_custodian, fake_screening, api_client, buyer, seller)
    fake_screening.severe.discard(SELLER_WALLET)
    fake_custodian.fail_next(TRANSFER, 400)  # the custodian refuses it for good (not a screening block)

    resolve(escrow_id, "lift", note="false positive")

    assert fake_custodian.outbound() == []
    payout = WaitingPayout.objects.get(escrow_id=escrow_id)
    assert payout.status == "cancelled" and "not sent" in payout.last_error
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", AMOUNT_MINOR, "transfer_failed")
    # The refused row can never go out next to ops' retry.
    call_command("send_waiting_payouts", *as_staff())
    assert fake_custodian.outbound() == []


def test_a_payout_that_cannot_reach_the_custodian_after_a_lift_waits_in_front_of_ops(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = blocked_at_release(fake_custodian, fake_screening, api_client, buyer, seller)
    fake_screening.severe.discard(SELLER_WALLET)
    fake_custodian.fail_next(TRANSFER, 503)

    resolve(escrow_id, "lift", note="false positive")

    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "waiting"
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.attention, escrow.held_minor) == ("transfer_failed", AMOUNT_MINOR)

    call_command("send_waiting_payouts", *as_staff())  # the custodian is back: sent once, with the release's key

    [sent] = fake_custodian.posts(TRANSFER)[-1:]
    assert uuid.UUID(sent.body["idempotencyKey"]) == uuid.UUID(idempotency_uuid(release_transfer_key(escrow_id)))
    assert len(fake_custodian.outbound()) == 1
    assert WaitingPayout.objects.get(escrow_id=escrow_id).status == "sent"
