"""PUT/GET /api/v1/payout-destination: strict input, the caller's own destination only."""

from __future__ import annotations

import pytest

from apps.payments.models import PayoutDestination

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/payout-destination"


def test_a_seller_registers_a_stripe_account_and_a_wallet(api_client, seller):
    client = api_client(seller)
    assert client.get(URL).json() == {"seller": seller.pk, "stripe_account_id": "", "wallet_address": "",
                                      "waiting_payouts": 0}

    client.put(URL, {"stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK"}, format="json")
    response = client.put(URL, {"wallet_address": "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"seller": seller.pk, "stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK",
                               "wallet_address": "0xabcdef0123456789abcdef0123456789abcdef01", "waiting_payouts": 0}


@pytest.mark.parametrize(("body", "field"), [
    ({"stripe_account_id": "acct_"}, "stripe_account_id"),
    ({"stripe_account_id": "cus_1Nv0FGQ9RKHgCVdK"}, "stripe_account_id"),
    ({"stripe_account_id": " acct_1Nv0FGQ9RKHgCVdK"}, "stripe_account_id"),
    ({"stripe_account_id": 42}, "stripe_account_id"),
    ({"wallet_address": "0x123"}, "wallet_address"),
    ({"wallet_address": "0x" + "0" * 40}, "wallet_address"),
    ({"wallet_address": "0xZZcdef0123456789abcdef0123456789abcdef01"}, "wallet_address"),
    ({"seller_id": 7, "stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK"}, "seller_id"),
    ({}, "body"),
])
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
