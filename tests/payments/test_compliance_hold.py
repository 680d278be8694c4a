"""A compliance hold (screening block) stops the clocks and blocks cancel/release until ops resolve it
with `manage.py resolve_compliance_hold`; a second deposit into a funded wallet is counted, never lost."""

from __future__ import annotations

import datetime

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.escrow.models import Escrow
from apps.escrow.timers import fire_due_timers
from apps.gateway.models import AuditLog
from apps.outbox.models import OutboxMessage
from tests.helpers import act, create_escrow, state_of
from tests.payments.test_custodian_rail import (
    AMOUNT,
    AMOUNT_MINOR,
    BUYER_WALLET,
    SELLER_WALLET,
    assert_money_invariant,
    funded,
    notify,
    outbox_types,
    settle_the_transfer,
    wallet_of,
)

pytestmark = pytest.mark.django_db(transaction=True)

OTHER_WALLET = "0x3333333333333333333333333333333333333333"


def held_on_deposit(fake_custodian, fake_screening, client, seller) -> str:
    escrow_id = create_escrow(client, seller=seller, amount=AMOUNT)["escrow_id"]
    fake_screening.severe.add(BUYER_WALLET)
    tx = fake_custodian.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)
    assert notify(client, *fake_custodian.notification(tx)).status_code == 200
    assert Escrow.objects.get(pk=escrow_id).attention == "compliance_hold"
    return escrow_id


def resolve(escrow_id: str, decision: str, *, staff: str = "agent", note: str = "reviewed: false positive") -> None:
    call_command("resolve_compliance_hold", escrow_id, decision, staff=staff, note=note)


def test_a_hold_stops_the_funding_timer_and_refuses_cancel(fake_custodian, fake_screening, api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = held_on_deposit(fake_custodian, fake_screening, as_buyer, seller)
    Escrow.objects.filter(pk=escrow_id).update(funding_deadline=timezone.now() - datetime.timedelta(hours=1))
    before = OutboxMessage.objects.count()

    assert fire_due_timers() == 0
    response = act(as_buyer, escrow_id, "cancel")

    assert response.status_code == 409, response.content
    assert "compliance hold" in response.json()["detail"]
    assert OutboxMessage.objects.count() == before
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.attention, escrow.received_minor) == ("AWAIT_FUNDS", "compliance_hold", 0)


def test_lifting_the_hold_counts_the_blocked_deposit_and_is_audited(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    as_buyer = api_client(buyer)
    escrow_id = held_on_deposit(fake_custodian, fake_screening, as_buyer, seller)
    Escrow.objects.filter(pk=escrow_id).update(funding_deadline=timezone.now() - datetime.timedelta(hours=1))

    resolve(escrow_id, "lift")

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.attention, escrow.received_minor, escrow.held_minor) == (
        "FUNDS_HELD",
        "",
        AMOUNT_MINOR,
        AMOUNT_MINOR,
    )
    assert escrow.funding_deadline > timezone.now()  # the clock restarted; the timer has nothing to do
    assert fire_due_timers() == 0
    [audit] = AuditLog.objects.filter(escrow_id=escrow_id)
    assert (audit.actor_id, audit.action, audit.reason) == (
        staff.pk,
        "resolve_compliance_hold",
        "reviewed: false positive",
    )
    assert outbox_types(escrow_id).count("PaymentSucceeded") == 1

    with pytest.raises(CommandError, match="not on compliance hold"):
        resolve(escrow_id, "lift")
    assert AuditLog.objects.filter(escrow_id=escrow_id).count() == 1


def test_refund_is_refused_when_nothing_is_held_and_nothing_changes(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    escrow_id = held_on_deposit(fake_custodian, fake_screening, api_client(buyer), seller)
    before = OutboxMessage.objects.count()

    with pytest.raises(CommandError, match="frozen in custody"):
        resolve(escrow_id, "refund")
    with pytest.raises(CommandError, match="staff"):
        resolve(escrow_id, "lift", staff="buyer")
    with pytest.raises(CommandError, match="what the review found"):
        resolve(escrow_id, "lift", note="   ")

    assert OutboxMessage.objects.count() == before and not AuditLog.objects.exists()
    assert Escrow.objects.get(pk=escrow_id).attention == "compliance_hold"


def test_a_blocked_payout_is_refunded_after_review(fake_custodian, fake_screening, api_client, buyer, seller, staff):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json")
    escrow_id = funded(fake_custodian, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    fake_screening.severe.add(SELLER_WALLET)
    act(as_buyer, escrow_id, "release")
    assert Escrow.objects.get(pk=escrow_id).attention == "compliance_hold"
    assert act(api_client(staff), escrow_id, "resolve", {"outcome": "refund"}).status_code == 409

    resolve(escrow_id, "refund", note="seller wallet linked to a mixer")

    [refund] = fake_custodian.posts("/v1/w3s/developer/transactions/transfer")
    assert refund.body["destinationAddress"] == BUYER_WALLET and refund.body["amounts"] == [AMOUNT]
    assert Escrow.objects.get(pk=escrow_id).state == "REFUNDING", outbox_types(escrow_id)
    assert state_of(as_buyer, escrow_id) == "REFUNDING"
    settle_the_transfer(fake_custodian, as_buyer)
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.refunded_minor, escrow.paid_out_minor, escrow.held_minor) == (
        "REFUNDED",
        AMOUNT_MINOR,
        0,
        0,
    )


def test_a_second_deposit_into_a_funded_wallet_is_counted_once_and_goes_to_ops(
    fake_custodian, api_client, buyer, seller
):
    as_buyer = api_client(buyer)
    escrow_id = funded(fake_custodian, as_buyer, seller)
    first = fake_custodian.transactions[next(iter(fake_custodian.transactions))]
    second = fake_custodian.deposit(wallet_of(escrow_id), amount="250.00", source=OTHER_WALLET)

    assert notify(as_buyer, *fake_custodian.notification(second)).status_code == 200
    # The custodian retries (a new notification id each time), and the first deposit is redelivered.
    notify(as_buyer, *fake_custodian.notification(second))
    notify(as_buyer, *fake_custodian.notification(first))

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.received_minor, escrow.held_minor) == (
        "FUNDS_HELD",
        AMOUNT_MINOR + 25_000,
        AMOUNT_MINOR + 25_000,
    )
    assert escrow.attention == "unexpected_payment"
    assert outbox_types(escrow_id).count("PaymentSucceeded") == 2


def test_a_second_deposit_from_a_sanctioned_wallet_is_not_counted_and_holds(
    fake_custodian, fake_screening, api_client, buyer, seller
):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded(fake_custodian, as_buyer, seller)
    fake_screening.sanctioned.add(OTHER_WALLET)
    tainted = fake_custodian.deposit(wallet_of(escrow_id), amount="250.00", source=OTHER_WALLET)

    notify(as_buyer, *fake_custodian.notification(tainted))

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.received_minor, escrow.attention) == (AMOUNT_MINOR, "compliance_hold")
    assert act(as_seller, escrow_id, "cancel").status_code == 409
    assert fake_custodian.posts("/v1/w3s/developer/transactions/transfer") == []


def test_a_refund_screening_blocks_after_a_lift_goes_back_in_front_of_ops_and_sends_nothing(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    """The deposit's wallet was lifted by review, but the vendors still block it when the money is to go
    back to it: the refund is held, the escrow is on compliance hold again, nothing leaves."""
    as_buyer = api_client(buyer)
    escrow_id = held_on_deposit(fake_custodian, fake_screening, as_buyer, seller)
    resolve(escrow_id, "lift")
    assert Escrow.objects.get(pk=escrow_id).state == "FUNDS_HELD"

    assert act(api_client(seller), escrow_id, "cancel").status_code == 202

    assert fake_custodian.outbound() == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.refunded_minor, escrow.attention) == (
        "REFUNDING",
        AMOUNT_MINOR,
        0,
        "compliance_hold",
    )
    assert outbox_types(escrow_id).count("RefundFailed") == 1
    assert outbox_types(escrow_id).count("EscrowComplianceHold") == 2

    # The vendors clear the wallet and ops lift the second hold: the refund is not forgotten.
    fake_screening.severe.discard(BUYER_WALLET)
    resolve(escrow_id, "lift", note="vendor re-rated the wallet")

    escrow = assert_money_invariant(escrow_id)
    assert fake_custodian.outbound() == []
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("REFUNDING", AMOUNT_MINOR, "refund_failed")
    assert "retry" in escrow.attention_detail
