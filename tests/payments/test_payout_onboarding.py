"""Getting paid by card: POST /payout-destination/onboarding creates a Connect Express account (real SDK,
fake Stripe) and answers an Account Link; readiness comes only from the re-read `account.updated` webhook,
which makes the account the seller's destination and sends the payout parked for it. Sandbox: a local
page that completes at once."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest
from django.test import Client

from apps.notifications.models import Notification
from apps.payments.models import ConnectedAccount, PayoutDestination, WaitingPayout
from apps.payments.public import payout_status
from tests.fakes.stripe_server import FakeStripe, signed_event
from tests.gateway.support import assert_problem, settle
from tests.helpers import act
from tests.payments.support import assert_money_invariant, post_webhook
from tests.payments.test_stripe_rail import funded_escrow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _public_base(settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "http://testserver"


def onboard(client: Any) -> str:
    response = client.post("/api/v1/payout-destination/onboarding")
    assert response.status_code == 200, response.content
    return response.json()["url"]


def account_updated(client: Any, account: dict[str, Any]) -> Any:
    response = post_webhook(client, "stripe", *signed_event("account.updated", account))
    settle()
    return response


def link_params(fake: FakeStripe) -> dict[str, str]:
    return [r for r in fake.requests if r.path == "/v1/account_links"][-1].params


# --- live: Stripe Connect Express -------------------------------------------------------------------------


def test_onboarding_creates_one_express_account_and_links_to_stripe(fake_stripe, api_client, seller):
    as_seller = api_client(seller)

    url = onboard(as_seller)

    [created] = [r for r in fake_stripe.requests if r.path == "/v1/accounts" and r.method == "POST"]
    assert created.params["type"] == "express"
    assert created.params["capabilities[transfers][requested]"] == "true"
    assert created.params["metadata[seller_id]"] == str(seller.pk)
    assert created.idempotency_key == f"connect-account-{seller.pk}"
    row = ConnectedAccount.objects.get(seller_id=seller.pk)
    assert url.startswith(fake_stripe.api_base) and row.account_id in url
    params = link_params(fake_stripe)
    assert params["account"] == row.account_id and params["type"] == "account_onboarding"
    assert params["return_url"].startswith("http://testserver/payouts/onboarding/return/")
    assert params["refresh_url"].startswith("http://testserver/payouts/onboarding/refresh/")
    # Not ready until Stripe says so: no destination yet.
    assert as_seller.get("/api/v1/payout-destination").json()["stripe_account_id"] == ""

    again = onboard(as_seller)
    assert again != url
    assert len([r for r in fake_stripe.requests if r.path == "/v1/accounts" and r.method == "POST"]) == 1


def test_the_return_page_shows_what_stripe_last_said_and_the_redirect_changes_nothing(fake_stripe, api_client, seller):
    onboard(api_client(seller))
    account_id = ConnectedAccount.objects.get(seller_id=seller.pk).account_id
    fake_stripe.finishes_onboarding(account_id)  # Stripe knows; we have not been told yet
    return_path = urlparse(link_params(fake_stripe)["return_url"]).path

    page = Client().get(return_path)

    assert page.status_code == 200 and "Stripe is checking your details" in page.content.decode()
    assert not ConnectedAccount.objects.get(seller_id=seller.pk).ready
    assert not PayoutDestination.objects.filter(seller_id=seller.pk).exclude(stripe_account_id="").exists()


def test_the_refresh_page_sends_the_seller_to_a_fresh_link(fake_stripe, api_client, seller):
    onboard(api_client(seller))
    refresh_path = urlparse(link_params(fake_stripe)["refresh_url"]).path

    response = Client().get(refresh_path)

    assert response.status_code == 302 and response["Location"].startswith(fake_stripe.api_base)
    assert len([r for r in fake_stripe.requests if r.path == "/v1/account_links"]) == 2
    assert Client().get(refresh_path[:-3]).status_code == 404
    assert Client().get(refresh_path.replace("/refresh/", "/return/") + "x").status_code == 404


def test_account_updated_makes_the_ready_account_the_destination(fake_stripe, api_client, seller):
    as_seller = api_client(seller)
    onboard(as_seller)
    account_id = ConnectedAccount.objects.get(seller_id=seller.pk).account_id

    response = account_updated(as_seller, fake_stripe.finishes_onboarding(account_id))

    assert response.status_code == 200 and response.json()["status"] == "processed"
    row = ConnectedAccount.objects.get(seller_id=seller.pk)
    assert (row.details_submitted, row.payouts_enabled, row.charges_enabled, row.ready) == (True, True, True, True)
    assert as_seller.get("/api/v1/payout-destination").json()["stripe_account_id"] == account_id
    page = Client().get(urlparse(link_params(fake_stripe)["return_url"]).path)
    assert "Ready" in page.content.decode()


def test_a_snapshot_saying_ready_is_checked_against_stripe(fake_stripe, api_client, seller):
    onboard(api_client(seller))
    account_id = ConnectedAccount.objects.get(seller_id=seller.pk).account_id
    forged = {
        "id": account_id,
        "object": "account",
        "charges_enabled": True,
        "payouts_enabled": True,
        "details_submitted": True,
        "capabilities": {"transfers": "active"},
    }

    assert account_updated(api_client(seller), forged).status_code == 200

    assert not ConnectedAccount.objects.get(seller_id=seller.pk).ready
    assert not PayoutDestination.objects.filter(seller_id=seller.pk).exclude(stripe_account_id="").exists()


def test_an_account_that_is_not_ours_is_ignored_without_asking_stripe(fake_stripe, api_client, seller):
    calls = len(fake_stripe.requests)
    response = account_updated(api_client(seller), {"id": "acct_1SomeoneElse00001", "object": "account"})
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert len(fake_stripe.requests) == calls
    assert ConnectedAccount.objects.count() == 0


def test_a_payout_parked_for_a_missing_destination_is_sent_once_the_account_is_ready(
    fake_stripe, api_client, buyer, seller
):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = funded_escrow(fake_stripe, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")
    assert act(as_buyer, escrow_id, "release").status_code == 202
    settle()
    parked = WaitingPayout.objects.get(escrow_id=escrow_id)
    assert parked.status == "waiting" and fake_stripe.created("transfers") == []
    # The seller is told, by DM and on the deal page, how to fix it.
    [dm] = Notification.objects.filter(escrow_id=escrow_id, kind="payout_waiting")
    assert dm.user_id == seller.pk and "payout account" in dm.text and "http://testserver/" in dm.text
    status = payout_status(escrow_id)
    assert (status.status, status.rail, status.seller_id) == ("waiting_for_destination", "card", seller.pk)
    assert status.fix_url.startswith("http://testserver/") and status.fix_url in dm.text
    assert not Notification.objects.filter(escrow_id=escrow_id, kind="payout_waiting", user_id=buyer.pk).exists()

    onboard(as_seller)
    account_id = ConnectedAccount.objects.get(seller_id=seller.pk).account_id
    # Stripe reports progress that is not enough yet: nothing is sent.
    assert account_updated(as_seller, {"id": account_id, "object": "account"}).status_code == 200
    assert fake_stripe.created("transfers") == []

    account_updated(as_seller, fake_stripe.finishes_onboarding(account_id))
    # A second account.updated (Stripe sends many) sends nothing more.
    account_updated(as_seller, fake_stripe.finishes_onboarding(account_id) | {"x": 1})

    [call] = fake_stripe.created("transfers")
    assert call.idempotency_key == parked.idempotency_key and call.params["destination"] == account_id
    assert payout_status(escrow_id).status == "sent"
    [transfer] = fake_stripe.of_kind("transfer")
    post_webhook(as_buyer, "stripe", *signed_event("transfer.created", transfer))
    settle()
    escrow = assert_money_invariant(escrow_id)
    assert (escrow.state, escrow.held_minor) == ("RELEASED", 0)


def test_stripe_unreachable_is_a_503_and_records_nothing(fake_stripe, api_client, seller):
    fake_stripe.fail_next("/v1/accounts", 500)

    body = assert_problem(api_client(seller).post("/api/v1/payout-destination/onboarding"), 503, "provider_unavailable")

    assert "try again" in body["detail"]
    assert ConnectedAccount.objects.count() == 0


def test_onboarding_takes_no_body_and_needs_a_caller(api_client, seller):
    as_seller = api_client(seller)
    assert_problem(
        as_seller.post("/api/v1/payout-destination/onboarding", {"x": 1}, format="json"), 400, "validation_error"
    )
    assert api_client().post("/api/v1/payout-destination/onboarding").status_code == 401
    assert ConnectedAccount.objects.count() == 0


# --- sandbox: a local page that completes at once ------------------------------------------------------


def test_sandbox_onboarding_is_a_local_page_that_completes_at_once(api_client, seller, stranger):
    as_seller = api_client(seller)
    url = onboard(as_seller)
    path = urlparse(url).path
    assert url.startswith("http://testserver/payouts/onboarding/sandbox/")

    browser = Client(enforce_csrf_checks=True)
    page = browser.get(path).content.decode()
    assert "Finish onboarding" in page and "Sandbox" in page
    assert browser.post(path).status_code == 403  # CSRF
    assert not ConnectedAccount.objects.exists()

    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    done = browser.post(path, {"csrfmiddlewaretoken": csrf})

    assert done.status_code == 200 and "Ready" in done.content.decode()
    destination = as_seller.get("/api/v1/payout-destination").json()
    assert destination["stripe_account_id"] == ConnectedAccount.objects.get(seller_id=seller.pk).account_id
    # The stranger's own onboarding is theirs, and a tampered link opens nothing.
    assert api_client(stranger).get("/api/v1/payout-destination").json()["stripe_account_id"] == ""
    assert Client().get(path[:-4] + "abcd").status_code == 404
    assert Client().post(path[:-4] + "abcd").status_code == 404


def test_no_payout_attempt_means_no_status_and_no_message(fake_stripe, api_client, buyer, seller):
    escrow_id = funded_escrow(fake_stripe, api_client(buyer), seller)
    assert payout_status(escrow_id) is None
    assert not Notification.objects.filter(kind="payout_waiting").exists()
