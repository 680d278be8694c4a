"""The USDC deposit page behind the buyer's checkout link: amount, network, address as text and QR code,
deadline and a status that follows the custodian's signed notifications (waiting, seen, screened/held, on
hold), polled as JSON by the page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from apps.payments.models import PaymentArtifact
from tests.fakes.custodian_server import FakeCustodian
from tests.gateway.support import create_settled, settle
from tests.helpers import state_of
from tests.payments.support import assert_money_invariant, outbox_types, post_webhook

pytestmark = pytest.mark.django_db(transaction=True)

BUYER_WALLET = "0x1111111111111111111111111111111111111111"
AMOUNT = "15000.00"


@pytest.fixture(autouse=True)
def _public_base(settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "http://testserver"


def notify(client: Any, fake: FakeCustodian, tx: dict[str, Any]) -> Any:
    response = post_webhook(client, "custodian", *fake.notification(tx))
    settle()
    return response


@pytest.fixture
def deal(fake_custodian: FakeCustodian, api_client, buyer, seller) -> dict[str, Any]:
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    payment = as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()["payment"]
    wallet = PaymentArtifact.objects.get(escrow_id=escrow_id, kind="payment").provider_id
    return {
        "id": escrow_id,
        "as_buyer": as_buyer,
        "link": payment["checkout_url"].removeprefix("http://testserver"),
        "address": payment["deposit_address"],
        "wallet": wallet,
    }


def status(deal: dict[str, Any]) -> dict[str, Any]:
    response = Client().get(f"{deal['link']}/status")
    assert response.status_code == 200
    return response.json()


def test_the_deposit_page_shows_amount_network_address_qr_and_deadline(deal):
    page = Client().get(deal["link"])

    assert page.status_code == 200
    html = page.content.decode()
    assert "15000.00 USDC" in html and "Base" in html
    assert f'<code id="deposit-address">{deal["address"]}</code>' in html
    svg = re.search(r"<svg[^>]*>.*?</svg>", html, re.S)
    assert svg and deal["address"] in svg.group(0) and "<path" in svg.group(0)  # the QR code, titled
    assert re.search(r'<time datetime="20\d\d-', html)
    assert 'data-status="waiting"' in html and "Waiting for your deposit" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # every asset from the app itself
    assert "<script" in html and "/status" in html  # it refreshes itself


def test_the_status_follows_the_deposit_from_seen_to_held(deal, fake_custodian):
    assert status(deal)["status"] == "waiting"

    tx = fake_custodian.deposit(deal["wallet"], amount=AMOUNT, source=BUYER_WALLET, state="CONFIRMED")
    assert notify(deal["as_buyer"], fake_custodian, tx).status_code == 200
    seen = status(deal)
    assert (seen["status"], seen["state"], seen["paid"]) == ("seen", "AWAIT_FUNDS", False)
    assert "PaymentSucceeded" not in outbox_types(deal["id"])  # seen is not counted
    # A redelivered notification of the same pending transaction changes nothing more.
    assert notify(deal["as_buyer"], fake_custodian, tx).json()["status"] == "ignored"

    assert notify(deal["as_buyer"], fake_custodian, fake_custodian.settle(tx["id"])).status_code == 200
    held = status(deal)
    assert (held["status"], held["state"], held["paid"]) == ("held", "FUNDS_HELD", True)
    assert state_of(deal["as_buyer"], deal["id"]) == "FUNDS_HELD"
    assert_money_invariant(deal["id"])
    page = Client().get(deal["link"])
    assert "This deal is paid" in page.content.decode()


def test_a_deposit_from_a_sanctioned_wallet_shows_on_hold(deal, fake_custodian, fake_screening):
    fake_screening.sanctioned.add(BUYER_WALLET)
    tx = fake_custodian.deposit(deal["wallet"], amount=AMOUNT, source=BUYER_WALLET)

    assert notify(deal["as_buyer"], fake_custodian, tx).status_code == 200

    assert status(deal)["status"] == "on_hold"
    assert "compliance review" in Client().get(deal["link"]).content.decode()
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"


def test_the_deposit_page_takes_no_post_and_bad_links_answer_in_json(deal):
    assert Client().post(deal["link"]).status_code == 405
    assert Client().get(f"{deal['link'][:-3]}xyz/status").json() == {"status": "not_found"}
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"


@pytest.mark.parametrize(
    "event_type",
    ["checkout.session.completed", "checkout.session.expired", "account.updated", "custodian.not_final"],
)
@pytest.mark.parametrize("odd_id", [{"a": 1}, ["x"], 7, None, "nothing-of-ours"])
def test_signed_events_with_odd_objects_are_ignored_not_a_5xx(event_type, odd_id):
    from apps.payments.providers import sandbox
    from apps.payments.public import webhook_receive

    obj = {"id": odd_id, "walletId": odd_id, "transactionType": "INBOUND", "payment_status": "paid"}
    body, headers = sandbox.signed_event(event_type, obj)
    outcome = webhook_receive(provider="sandbox", body=body, headers=headers)

    assert (outcome.http_status, outcome.status) == (200, "ignored"), outcome
