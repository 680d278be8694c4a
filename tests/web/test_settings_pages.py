"""Payout and notification settings pages: the wallet form's checks, card-payout onboarding through the
payments service (the sandbox's page), and notification preferences; refusals change nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from apps.notifications.public import preferences_get
from apps.payments.public import destination_get, onboarding_get
from tests.payments.conftest import fake_stripe  # noqa: F401 - the live Stripe fake
from tests.web.conftest import csrf_token

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Any, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, {"csrfmiddlewaretoken": csrf_token(client, path), **data})


def test_a_wallet_that_is_not_an_address_is_refused_in_words(browser_of: Any, seller: Any) -> None:
    as_seller = browser_of(seller)
    for bad in ("0x123", "not an address at all, not an address at all!!", "0x" + "g" * 40):
        response = post(as_seller, "/settings/payout", {"wallet_address": bad})
        assert response.status_code == 400, bad
        assert 'class="error"' in response.content.decode()
    assert destination_get(seller_id=seller.pk) is None


def test_card_payout_onboarding_in_the_sandbox(browser_of: Any, seller: Any, settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "http://testserver"
    as_seller = browser_of(seller)
    page = as_seller.get("/settings/payout").content.decode()
    assert 'id="payout-onboarding"' in page and "Not set up yet" in page

    response = post(as_seller, "/settings/payout/onboarding", {})
    assert response.status_code == 302
    target = response["Location"].removeprefix("http://testserver")
    assert target.startswith("/payouts/onboarding/sandbox/")
    as_seller.get(target)
    as_seller.post(target, {"csrfmiddlewaretoken": as_seller.cookies["csrftoken"].value})
    assert onboarding_get(seller_id=seller.pk).ready
    assert 'id="card-payouts-ready"' in as_seller.get("/settings/payout").content.decode()


def test_onboarding_needs_a_post_with_the_csrf_token(browser_of: Any, seller: Any) -> None:
    as_seller = browser_of(seller)
    assert as_seller.get("/settings/payout/onboarding").status_code == 405
    assert as_seller.post("/settings/payout/onboarding").status_code == 403
    assert onboarding_get(seller_id=seller.pk) is None


def test_notification_preferences_are_saved_and_locked_ones_stay_on(browser_of: Any, buyer: Any) -> None:
    as_buyer = browser_of(buyer)
    page = as_buyer.get("/settings/notifications").content.decode()
    kinds = re.findall(r'<input type="checkbox" name="([a-z_]+)"', page)
    assert kinds
    before = preferences_get(user_id=buyer.pk)
    # everything unticked: the editable kinds go off, the locked ones stay on
    response = post(as_buyer, "/settings/notifications", {})
    assert response.status_code == 302
    after = preferences_get(user_id=buyer.pk)
    assert after != before or not any(before.values())
    from apps.notifications.public import LOCKED_ON

    assert all(after[kind] for kind in LOCKED_ON if kind in after)
    assert not any(enabled for kind, enabled in after.items() if kind not in LOCKED_ON)
    # an unknown field changes nothing
    post(as_buyer, "/settings/notifications", {kinds[0]: "on", "is_staff": "on"})
    assert preferences_get(user_id=buyer.pk) == after


def test_the_deal_page_tells_a_seller_whose_payout_waits_for_a_destination(
    fake_stripe: Any,  # noqa: F811 - the fixture imported above
    api_client: Any,
    browser_of: Any,
    buyer: Any,
    seller: Any,
    settings: Any,
) -> None:
    from tests.helpers import act
    from tests.payments.test_stripe_rail import funded_escrow

    settings.PUBLIC_BASE_URL = "http://testserver"
    as_buyer = api_client(buyer)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    act(api_client(seller), escrow_id, "deliver")
    assert act(as_buyer, escrow_id, "release").status_code == 202
    from tests.gateway.support import settle

    settle()
    page = browser_of(seller).get(f"/deals/{escrow_id}").content.decode()
    assert 'data-status="waiting_for_destination"' in page and "/settings/payout" in page
    # the buyer is not shown the seller's payout
    assert 'id="payout-status"' not in browser_of(buyer).get(f"/deals/{escrow_id}").content.decode()
