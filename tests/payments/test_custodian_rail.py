"""USDC on Base above the Stripe threshold: a Circle-shaped custodian, TRM and Chainalysis, all faked on
loopback; notifications signed with the custodian's ECDSA scheme and posted to the public endpoint."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rest_framework.test import APIClient

from apps.escrow.models import Escrow
from apps.outbox.drain import drain
from apps.outbox.models import DeadLetter, OutboxMessage
from apps.payments.models import PaymentArtifact, WalletScreening
from tests.fakes.custodian_server import FakeCustodian
from tests.helpers import act, create_escrow, state_of
from tests.outbox.support import wait_until
from tests.payments.support import assert_money_invariant, outbox_types, post_webhook

pytestmark = pytest.mark.django_db(transaction=True)

BUYER_WALLET = "0x1111111111111111111111111111111111111111"
SELLER_WALLET = "0x2222222222222222222222222222222222222222"
AMOUNT, AMOUNT_MINOR = "15000.00", 1_500_000


def notify(client: APIClient, body: bytes, headers: dict[str, str]) -> Any:
    return post_webhook(client, "custodian", body, headers)


def settle_the_transfer(fake: FakeCustodian, client: APIClient) -> None:
    """The custodian settles the one outbound transfer and tells us so by its signed webhook."""
    [out] = fake.outbound()
    assert notify(client, *fake.notification(fake.settle(out["id"]))).status_code == 200


def wallet_of(escrow_id: str) -> str:
    return PaymentArtifact.objects.get(escrow_id=escrow_id, kind="payment").provider_id


def funded(fake: FakeCustodian, client: APIClient, seller: Any) -> str:
    escrow_id = create_escrow(client, seller=seller, amount=AMOUNT)["escrow_id"]
    tx = fake.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)
    assert notify(client, *fake.notification(tx)).status_code == 200
    assert state_of(client, escrow_id) == "FUNDS_HELD"
    return escrow_id


def test_above_the_threshold_the_buyer_gets_a_deposit_wallet_on_base(fake_custodian, api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]

    [call] = fake_custodian.posts("/v1/w3s/developer/wallets")
    command = OutboxMessage.objects.get(aggregate_id=escrow_id, type__endswith="CreatePaymentIntent")
    key = uuid.UUID(call.body["idempotencyKey"])
    assert key.version == 4
    assert key == uuid.UUID(fake_custodian_key(f"payment-{command.event_id}"))
    assert call.body["blockchains"] == ["BASE"] and call.body["metadata"][0]["refId"] == escrow_id
    [wallet] = fake_custodian.wallets.values()
    payment = as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()["payment"]
    assert "/checkout/" in payment.pop("checkout_url")  # the deposit page
    assert payment == {
        "provider": "custodian",
        "status": "pending",
        "client_secret": None,
        "deposit_address": wallet["address"],
    }


def fake_custodian_key(key: str) -> str:
    from apps.payments.providers.custodian import idempotency_uuid

    return idempotency_uuid(key)


def test_a_clean_deposit_is_screened_by_both_vendors_and_held(
    fake_custodian, fake_screening, api_client, buyer, seller
):
    escrow_id = funded(fake_custodian, api_client(buyer), seller)

    assert sorted(fake_screening.screened) == [("chainalysis", BUYER_WALLET), ("trm", BUYER_WALLET)]
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.received_minor, escrow.held_minor) == (AMOUNT_MINOR, AMOUNT_MINOR)
    kept = WalletScreening.objects.filter(escrow_id=escrow_id, purpose="deposit")
    assert {(s.vendor, s.allowed) for s in kept} == {("trm", True), ("chainalysis", True)}
    assert all(s.raw for s in kept)


def test_a_sanctioned_depositor_blocks_and_nothing_is_accepted(
    fake_custodian, fake_screening, api_client, buyer, seller
):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    fake_screening.sanctioned.add(BUYER_WALLET)
    tx = fake_custodian.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)

    assert notify(as_buyer, *fake_custodian.notification(tx)).status_code == 200

    types = outbox_types(escrow_id)
    assert "WalletScreened" in types and "EscrowComplianceHold" in types and "PaymentSucceeded" not in types
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.received_minor, escrow.attention) == ("AWAIT_FUNDS", 0, "compliance_hold")
    # The wallet stays in payments' screening record (ops read it there); no message carries it.
    assert WalletScreening.objects.filter(escrow_id=escrow_id, address=BUYER_WALLET, allowed=False).exists()
    assert BUYER_WALLET not in escrow.attention_detail
    blocked = WalletScreening.objects.get(escrow_id=escrow_id, vendor="chainalysis")
    assert not blocked.allowed and "OFAC" in blocked.reason
    assert blocked.raw["identifications"][0]["category"] == "sanctions"


def test_a_screening_outage_fails_closed_and_the_custodian_retries(
    fake_custodian, fake_screening, api_client, buyer, seller
):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    tx = fake_custodian.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)
    body, headers = fake_custodian.notification(tx)
    fake_screening.fail_next("trm", 503)

    first = notify(as_buyer, body, headers)

    assert first.status_code == 503
    assert state_of(as_buyer, escrow_id) == "AWAIT_FUNDS"
    assert "PaymentSucceeded" not in outbox_types(escrow_id)

    assert notify(as_buyer, body, headers).status_code == 200  # the custodian's retry
    assert state_of(as_buyer, escrow_id) == "FUNDS_HELD"
    assert_money_invariant(escrow_id)


@pytest.mark.parametrize("tamper", ["forged", "unsigned", "other_key", "unknown_key_id"])
def test_bad_notifications_get_400_and_change_nothing(fake_custodian, api_client, buyer, seller, tamper):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    tx = fake_custodian.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)
    if tamper == "other_key":
        body, headers = fake_custodian.notification(tx, signing_key=ec.generate_private_key(ec.SECP256R1()))
    elif tamper == "unknown_key_id":
        body, headers = fake_custodian.notification(tx, key_id="00000000-0000-4000-8000-000000000000")
    else:
        body, headers = fake_custodian.notification(tx)
        if tamper == "forged":
            body = body.replace(b'"15000.00"', b'"15.00"')
        else:
            headers = {}
    before = OutboxMessage.objects.count()

    response = notify(as_buyer, body, headers)

    assert response.status_code == 400 and response.json()["code"] == "invalid_signature"
    assert OutboxMessage.objects.count() == before
    assert state_of(as_buyer, escrow_id) == "AWAIT_FUNDS"
    assert not WalletScreening.objects.exists()


def test_release_screens_the_seller_wallet_and_sends_one_transfer(
    fake_custodian, fake_screening, api_client, buyer, seller
):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json")
    escrow_id = funded(fake_custodian, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")

    assert act(as_buyer, escrow_id, "release").status_code == 202

    [call] = fake_custodian.posts("/v1/w3s/developer/transactions/transfer")
    fee = Escrow.objects.get(pk=escrow_id).fee_bps * AMOUNT_MINOR // 10000
    net = AMOUNT_MINOR - fee
    assert call.body["amounts"] == [f"{net // 100}.{net % 100:02d}"]
    assert call.body["destinationAddress"] == SELLER_WALLET and call.body["walletId"] == wallet_of(escrow_id)
    assert uuid.UUID(call.body["idempotencyKey"]).version == 4
    assert ("chainalysis", SELLER_WALLET) in fake_screening.screened
    [out] = fake_custodian.outbound()
    assert notify(as_buyer, *fake_custodian.notification(out)).json()["status"] == "ignored"  # not final yet
    assert state_of(as_buyer, escrow_id) == "RELEASING"

    assert notify(as_buyer, *fake_custodian.notification(fake_custodian.settle(out["id"]))).status_code == 200
    # Applied by the inline drain after the webhook's commit; on a loaded server an unrelated open
    # transaction can hold the xid watermark back past that drain's wait (delayed, never skipped).
    assert wait_until(lambda: Escrow.objects.get(pk=escrow_id).state == "RELEASED", step=drain)

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.paid_out_minor, escrow.fee_minor, escrow.held_minor) == ("RELEASED", net, fee, 0)
    assert len(fake_custodian.posts("/v1/w3s/developer/transactions/transfer")) == 1


def test_a_severe_risk_seller_wallet_blocks_the_payout(fake_custodian, fake_screening, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json")
    escrow_id = funded(fake_custodian, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    fake_screening.severe.add(SELLER_WALLET)

    act(as_buyer, escrow_id, "release")

    assert fake_custodian.posts("/v1/w3s/developer/transactions/transfer") == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", AMOUNT_MINOR, "compliance_hold")
    # The wallet stays in payments' screening record (ops read it there); no message carries it.
    assert WalletScreening.objects.filter(escrow_id=escrow_id, address=SELLER_WALLET, allowed=False).exists()
    assert SELLER_WALLET not in escrow.attention_detail
    assert {"TransferFailed", "WalletScreened", "EscrowComplianceHold"} <= set(outbox_types(escrow_id))
    assert not WalletScreening.objects.get(escrow_id=escrow_id, purpose="payout", vendor="trm").allowed


def test_a_vendor_outage_at_payout_moves_no_money(fake_custodian, fake_screening, api_client, buyer, seller, settings):
    settings.BUS_RETRY_BASE_SECONDS = 0.01
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json")
    escrow_id = funded(fake_custodian, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    fake_screening.fail_next("chainalysis", 500, times=settings.BUS_MAX_ATTEMPTS)

    act(as_buyer, escrow_id, "release")

    assert fake_custodian.posts("/v1/w3s/developer/transactions/transfer") == []
    assert DeadLetter.objects.filter(type__endswith="TransferToSeller", aggregate_id=escrow_id).exists()
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor) == ("RELEASING", AMOUNT_MINOR)


def test_a_refund_goes_back_to_the_screened_buyer_wallet(fake_custodian, fake_screening, api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded(fake_custodian, as_buyer, seller)

    assert act(as_seller, escrow_id, "cancel").status_code == 202

    [call] = fake_custodian.posts("/v1/w3s/developer/transactions/transfer")
    assert call.body["destinationAddress"] == BUYER_WALLET and call.body["amounts"] == [AMOUNT]
    assert WalletScreening.objects.filter(escrow_id=escrow_id, purpose="refund").count() == 2
    settle_the_transfer(fake_custodian, as_buyer)

    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.refunded_minor, escrow.held_minor) == ("REFUNDED", AMOUNT_MINOR, 0)


def test_ops_see_a_blocked_wallet_in_the_admin_and_cannot_edit_it(
    fake_custodian, fake_screening, api_client, buyer, seller, staff
):
    from django.contrib.auth.models import Permission
    from django.test import Client

    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    fake_screening.severe.add(BUYER_WALLET)
    notify(
        as_buyer,
        *fake_custodian.notification(fake_custodian.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)),
    )
    staff.user_permissions.add(Permission.objects.get(codename="view_walletscreening"))
    ops = Client()
    ops.force_login(staff)

    listing = ops.get("/admin/payments/walletscreening/?allowed__exact=0")

    assert listing.status_code == 200 and BUYER_WALLET in listing.content.decode()
    screening = WalletScreening.objects.get(escrow_id=escrow_id, vendor="trm")
    assert ops.post(f"/admin/payments/walletscreening/{screening.pk}/change/", {"allowed": "on"}).status_code == 403
    screening.refresh_from_db()
    assert screening.allowed is False


def test_a_refund_to_a_wallet_sanctioned_since_the_deposit_moves_nothing(
    fake_custodian, fake_screening, api_client, buyer, seller
):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded(fake_custodian, as_buyer, seller)
    fake_screening.sanctioned.add(BUYER_WALLET)

    act(as_seller, escrow_id, "cancel")

    assert fake_custodian.posts("/v1/w3s/developer/transactions/transfer") == []
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("REFUNDING", AMOUNT_MINOR, "compliance_hold")
    assert {"RefundFailed", "WalletScreened", "EscrowComplianceHold"} <= set(outbox_types(escrow_id))
