"""The custodian, TRM and Chainalysis misbehaving the way real providers do: 429s with their error bodies
and Retry-After, custodian 5xx and 4xx answers, answers slower than our timeout. Driven through the public
API and the bus, against the fakes on loopback; the money invariant is checked after each."""

from __future__ import annotations

import pytest

from apps.escrow.models import Escrow
from apps.outbox.models import DeadLetter
from apps.payments.models import PaymentArtifact, WalletScreening
from tests.helpers import act, create_escrow, state_of
from tests.payments.support import assert_money_invariant, outbox_types
from tests.payments.test_custodian_rail import (
    AMOUNT,
    AMOUNT_MINOR,
    BUYER_WALLET,
    SELLER_WALLET,
    funded,
    notify,
    wallet_of,
)

pytestmark = pytest.mark.django_db(transaction=True)

TRANSFER = "/v1/w3s/developer/transactions/transfer"


@pytest.fixture
def quick_retries(settings):
    """Short client timeouts and bus backoff: a slow answer is given up on quickly (nothing here asserts
    how long anything took)."""
    settings.BUS_RETRY_BASE_SECONDS = 0.01
    settings.CUSTODIAN_TIMEOUT_SECONDS = 0.3
    settings.SCREENING_TIMEOUT_SECONDS = 0.3
    return settings


def delivered(fake_custodian, api_client, buyer, seller):
    """A funded USDC escrow, delivered, whose seller registered a clean wallet."""
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    assert (
        as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json").status_code == 200
    )
    escrow_id = funded(fake_custodian, as_buyer, seller)
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    return escrow_id, as_buyer


def settle_payout(fake_custodian, as_buyer, escrow_id: str) -> Escrow:
    """Exactly one transfer left the escrow's wallet; the custodian completes it and the escrow releases."""
    [out] = fake_custodian.outbound()
    assert out["destinationAddress"] == SELLER_WALLET
    [artifact] = PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer")
    assert artifact.provider_id == out["id"]
    assert notify(as_buyer, *fake_custodian.notification(fake_custodian.settle(out["id"]))).status_code == 200
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.paid_out_minor + escrow.fee_minor) == ("RELEASED", 0, AMOUNT_MINOR)
    return escrow


# --- 429: rate limited ----------------------------------------------------------------------------------


def test_a_trm_429_on_a_deposit_is_waited_out_and_the_deposit_counts_once(
    fake_custodian, fake_screening, api_client, buyer, seller
):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    tx = fake_custodian.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)
    fake_screening.fail_next("trm", 429, retry_after="0")

    # Answered in one go: the client waits out Retry-After and asks TRM again (no 503 to the custodian).
    assert notify(as_buyer, *fake_custodian.notification(tx)).status_code == 200

    assert [status for vendor, status in fake_screening.answered if vendor == "trm"] == [429, 200]
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.received_minor, escrow.held_minor) == ("FUNDS_HELD", AMOUNT_MINOR, AMOUNT_MINOR)
    assert outbox_types(escrow_id).count("PaymentSucceeded") == 1
    assert WalletScreening.objects.filter(escrow_id=escrow_id, purpose="deposit", vendor="trm").count() == 1


def test_a_chainalysis_429_at_payout_is_waited_out_and_one_transfer_goes(
    fake_custodian, fake_screening, api_client, buyer, seller, settings
):
    settings.BUS_MAX_ATTEMPTS = 1  # no bus retry: only the client's own wait can get it through
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    fake_screening.fail_next("chainalysis", 429, retry_after="0")

    assert act(as_buyer, escrow_id, "release").status_code == 202

    assert [status for vendor, status in fake_screening.answered if vendor == "chainalysis"][-2:] == [429, 200]
    assert not DeadLetter.objects.filter(aggregate_id=escrow_id).exists()
    assert len(fake_custodian.keys(TRANSFER)) == 1
    settle_payout(fake_custodian, as_buyer, escrow_id)


def test_a_429_with_a_long_retry_after_is_left_to_the_bus_and_moves_nothing_meanwhile(
    fake_custodian, fake_screening, api_client, buyer, seller, quick_retries
):
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    # Longer than the client waits itself: it fails closed at once and the bus retries later.
    fake_screening.fail_next("chainalysis", 429, retry_after="3600")

    act(as_buyer, escrow_id, "release")

    assert [status for vendor, status in fake_screening.answered if vendor == "chainalysis"][-2:] == [429, 200]
    assert len(fake_custodian.keys(TRANSFER)) == 1
    settle_payout(fake_custodian, as_buyer, escrow_id)


def test_a_custodian_429_on_a_transfer_is_waited_out_with_the_same_key(
    fake_custodian, api_client, buyer, seller, settings
):
    settings.BUS_MAX_ATTEMPTS = 1  # no bus retry: only the client's own wait can get it through
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    fake_custodian.fail_next(TRANSFER, 429, retry_after="0")

    act(as_buyer, escrow_id, "release")

    calls = [r for r in fake_custodian.requests if r.path == TRANSFER]
    assert [c.status for c in calls] == [429, 201]
    assert len(set(fake_custodian.keys(TRANSFER))) == 1
    assert not DeadLetter.objects.filter(aggregate_id=escrow_id).exists()
    settle_payout(fake_custodian, as_buyer, escrow_id)


# --- custodian 5xx, timeouts, 4xx --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_a_custodian_5xx_on_a_transfer_is_retried_with_the_same_key(
    fake_custodian, api_client, buyer, seller, quick_retries, status
):
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    fake_custodian.fail_next(TRANSFER, status, times=2)

    act(as_buyer, escrow_id, "release")

    calls = [r for r in fake_custodian.requests if r.path == TRANSFER]
    assert [c.status for c in calls] == [status, status, 201]
    assert len(set(fake_custodian.keys(TRANSFER))) == 1
    settle_payout(fake_custodian, as_buyer, escrow_id)


def test_a_custodian_timeout_on_a_transfer_is_retried_with_the_same_key_and_pays_once(
    fake_custodian, api_client, buyer, seller, quick_retries
):
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    # The custodian makes the transfer but answers after our client gave up.
    fake_custodian.delay_next(TRANSFER, 0.5)

    act(as_buyer, escrow_id, "release")

    keys = fake_custodian.keys(TRANSFER)
    # How many retries the slow answer takes depends on the machine; what matters is one key, one transfer.
    assert len(keys) >= 2 and len(set(keys)) == 1
    assert not DeadLetter.objects.filter(aggregate_id=escrow_id).exists()
    settle_payout(fake_custodian, as_buyer, escrow_id)


def test_a_custodian_4xx_on_a_transfer_is_a_transfer_failure_for_ops(
    fake_custodian, api_client, buyer, seller, quick_retries
):
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    fake_custodian.fail_next(TRANSFER, 400, message="Asset amount owned by the wallet is insufficient")

    act(as_buyer, escrow_id, "release")

    assert len(fake_custodian.keys(TRANSFER)) == 1  # refused for good: not retried
    assert fake_custodian.outbound() == []
    assert "TransferFailed" in outbox_types(escrow_id)
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id, kind="transfer").exists()
    assert not DeadLetter.objects.filter(aggregate_id=escrow_id).exists()
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.attention) == ("RELEASING", AMOUNT_MINOR, "transfer_failed")
    assert "insufficient" in escrow.attention_detail


# --- screening timeouts: fail closed ------------------------------------------------------------------------


def test_a_screening_timeout_on_a_deposit_fails_closed_and_the_custodian_retry_counts_it_once(
    fake_custodian, fake_screening, api_client, buyer, seller, quick_retries
):
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    body, headers = fake_custodian.notification(
        fake_custodian.deposit(wallet_of(escrow_id), amount=AMOUNT, source=BUYER_WALLET)
    )
    fake_screening.delay_next("chainalysis", 0.5)

    assert notify(as_buyer, body, headers).status_code == 503

    assert state_of(as_buyer, escrow_id) == "AWAIT_FUNDS"
    assert "PaymentSucceeded" not in outbox_types(escrow_id)
    assert assert_money_invariant(escrow_id).received_minor == 0

    assert notify(as_buyer, body, headers).status_code == 200  # the custodian's retry
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor) == ("FUNDS_HELD", AMOUNT_MINOR)
    assert outbox_types(escrow_id).count("PaymentSucceeded") == 1


def test_a_screening_timeout_at_payout_moves_nothing_until_a_retry_gets_an_answer(
    fake_custodian, fake_screening, api_client, buyer, seller, quick_retries
):
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    fake_screening.delay_next("trm", 0.5)
    before = len(fake_screening.answered)

    act(as_buyer, escrow_id, "release")

    asked = [vendor for vendor, _ in fake_screening.answered[before:]]
    assert asked.count("trm") >= 2  # given up on, then asked again
    payout_screenings = WalletScreening.objects.filter(escrow_id=escrow_id, purpose="payout", vendor="trm")
    assert payout_screenings.count() == 1  # the answer that came too late was not taken
    assert len(fake_custodian.keys(TRANSFER)) == 1
    settle_payout(fake_custodian, as_buyer, escrow_id)


@pytest.mark.parametrize("vendor", ["trm", "chainalysis"])
def test_a_screening_timeout_that_lasts_dead_letters_the_payout_and_moves_nothing(
    fake_custodian, fake_screening, api_client, buyer, seller, quick_retries, vendor
):
    escrow_id, as_buyer = delivered(fake_custodian, api_client, buyer, seller)
    fake_screening.delay_next(vendor, 0.6, times=quick_retries.BUS_MAX_ATTEMPTS)

    act(as_buyer, escrow_id, "release")

    assert fake_custodian.keys(TRANSFER) == []
    [dead] = DeadLetter.objects.filter(type__endswith="TransferToSeller", aggregate_id=escrow_id)
    assert "Timeout" in dead.error
    assert "TransferFailed" not in outbox_types(escrow_id)
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor, escrow.paid_out_minor) == ("RELEASING", AMOUNT_MINOR, 0)
