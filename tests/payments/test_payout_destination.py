"""PUT/GET /api/v1/payout-destination: strict input, the caller's own destination only."""

from __future__ import annotations

import pytest

from apps.payments.models import PayoutDestination

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/payout-destination"


def test_a_seller_registers_a_stripe_account_and_a_wallet(api_client, seller):
    client = api_client(seller)
    assert client.get(URL).json() == {
        "seller": seller.pk,
        "stripe_account_id": "",
        "wallet_address": "",
        "waiting_payouts": 0,
    }

    client.put(URL, {"stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK"}, format="json")
    response = client.put(URL, {"wallet_address": "0xabCDeF0123456789AbcdEf0123456789aBCDEF01"}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "seller": seller.pk,
        "stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK",
        "wallet_address": "0xabcdef0123456789abcdef0123456789abcdef01",
        "waiting_payouts": 0,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stripe_account_id": "acct_"}, "stripe_account_id"),
        ({"stripe_account_id": "cus_1Nv0FGQ9RKHgCVdK"}, "stripe_account_id"),
        ({"stripe_account_id": " acct_1Nv0FGQ9RKHgCVdK"}, "stripe_account_id"),
        ({"stripe_account_id": 42}, "stripe_account_id"),
        ({"wallet_address": "0x123"}, "wallet_address"),
        ({"wallet_address": "0x" + "0" * 40}, "wallet_address"),
        ({"wallet_address": "0xZZcdef0123456789abcdef0123456789abcdef01"}, "wallet_address"),
        # EIP-55: the right digits in a wrong mixed case (one letter flipped) is a mistyped address.
        ({"wallet_address": "0xabCDeF0123456789AbcdEf0123456789aBCDEF0a"}, "wallet_address"),
        ({"wallet_address": "0xAbCDeF0123456789AbcdEf0123456789aBCDEF01"}, "wallet_address"),
        ({"seller_id": 7, "stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK"}, "seller_id"),
        ({}, "body"),
    ],
)
def test_bad_input_is_a_precise_400_and_stores_nothing(api_client, seller, body, field):
    response = api_client(seller).put(URL, body, format="json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert field in [error["field"] for error in problem["errors"]], problem
    assert not PayoutDestination.objects.exists()


def test_anonymous_callers_are_refused(api_client):
    assert api_client().put(URL, {"stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK"}, format="json").status_code == 401
    assert not PayoutDestination.objects.exists()


@pytest.mark.parametrize(
    "address",
    [
        # The test vectors of EIP-55 itself.
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        # No checksum to check: all lower, all upper.
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED",
    ],
)
def test_checksummed_and_single_case_wallets_are_accepted_and_stored_lower_case(api_client, seller, address):
    response = api_client(seller).put(URL, {"wallet_address": address}, format="json")

    assert response.status_code == 200, response.content
    assert PayoutDestination.objects.get(seller_id=seller.pk).wallet_address == address.lower()


def test_a_wrong_checksum_is_refused_naming_the_field(api_client, seller):
    wrong = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"  # last letter's case flipped

    response = api_client(seller).put(URL, {"wallet_address": wrong}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "wallet_address", "detail": response.json()["detail"]}]
    assert "EIP-55" in response.json()["detail"]
    assert not PayoutDestination.objects.exists()


# --- live: the connected account is verified with Stripe before it is stored ---------------------------

ACCOUNT = "acct_1SellerFake000001"


def test_a_ready_connected_account_is_verified_and_stored(fake_stripe, api_client, seller):
    fake_stripe.accounts.add(ACCOUNT)

    response = api_client(seller).put(URL, {"stripe_account_id": ACCOUNT}, format="json")

    assert response.status_code == 200, response.content
    assert [r.path for r in fake_stripe.requests] == [f"/v1/accounts/{ACCOUNT}"]
    assert PayoutDestination.objects.get(seller_id=seller.pk).stripe_account_id == ACCOUNT


@pytest.mark.parametrize(
    ("known", "status", "code"),
    [
        ("missing", 400, "validation_error"),
        ("restricted", 409, "destination_not_ready"),
        ("stripe_down", 503, "provider_unavailable"),
    ],
)
def test_an_account_stripe_cannot_pay_is_refused_and_nothing_stored(
    fake_stripe, api_client, seller, known, status, code
):
    if known == "restricted":
        fake_stripe.restricted.add(ACCOUNT)
    elif known == "stripe_down":
        fake_stripe.accounts.add(ACCOUNT)
        fake_stripe.fail_next(f"/v1/accounts/{ACCOUNT}", 500, {"type": "api_error", "message": "boom"})

    response = api_client(seller).put(URL, {"stripe_account_id": ACCOUNT}, format="json")

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert [error["field"] for error in response.json()["errors"]] == ["stripe_account_id"]
    assert not PayoutDestination.objects.exists()
