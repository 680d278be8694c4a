"""The buyer's checkout link and the sandbox's card page, through the public surface: the API gives the
buyer (only) a capability link; anyone holding it pays without signing in; the card form goes through the
signed webhook path; refusals change nothing."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.escrow.models import Escrow
from apps.outbox.models import OutboxMessage
from apps.payments.checkout import checkout_token
from apps.payments.models import PaymentArtifact, WebhookEvent
from tests.gateway.support import create_settled, settle
from tests.helpers import state_of
from tests.payments.support import assert_money_invariant, outbox_types

pytestmark = pytest.mark.django_db(transaction=True)


def checkout_link(client: Any, escrow_id: str) -> str:
    body = client.get(f"/api/v1/escrows/{escrow_id}").json()
    url = body["payment"]["checkout_url"]
    assert url.startswith("http://testserver/checkout/"), url
    return url.removeprefix("http://testserver")


@pytest.fixture(autouse=True)
def _public_base(settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "http://testserver"


@pytest.fixture
def deal(api_client, buyer, seller) -> dict[str, Any]:
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller, amount="149.99")["escrow_id"]
    return {"id": escrow_id, "as_buyer": as_buyer, "link": checkout_link(as_buyer, escrow_id)}


def pay_with(link: str, number: str, client: Client | None = None) -> Any:
    response = (client or Client()).post(link, {"card_number": number})
    settle()
    return response


def counts() -> dict[str, int]:
    settle()
    return {"webhooks": WebhookEvent.objects.count(), "outbox": OutboxMessage.objects.count()}


# --- the link in the API ---------------------------------------------------------------------------------


def test_only_the_buyer_gets_the_checkout_link(deal, api_client, seller, stranger, staff):
    seller_view = api_client(seller).get(f"/api/v1/escrows/{deal['id']}").json()
    assert "payment" not in seller_view
    assert "checkout_url" not in str(api_client(staff).get(f"/api/v1/escrows/{deal['id']}").json())
    assert api_client(stranger).get(f"/api/v1/escrows/{deal['id']}").status_code == 404
    listed = deal["as_buyer"].get("/api/v1/escrows").json()["results"]
    assert [row["payment"]["checkout_url"] for row in listed][0].startswith("http://testserver/checkout/")


def test_the_link_is_unguessable_and_names_one_escrow(deal, api_client, buyer, seller):
    other = create_settled(deal["as_buyer"], seller=seller, amount="20.00")["escrow_id"]
    other_link = checkout_link(deal["as_buyer"], other)
    assert other_link != deal["link"]
    token = deal["link"].removeprefix("/checkout/")
    assert deal["id"] not in token  # it travels inside the signed value (base64), which an edit breaks
    assert len(token) >= 60


def test_after_funding_the_buyer_has_no_link(deal):
    assert pay_with(deal["link"], "4242 4242 4242 4242").status_code == 302
    body = deal["as_buyer"].get(f"/api/v1/escrows/{deal['id']}").json()
    assert body["state"] == "FUNDS_HELD" and "payment" not in body


# --- the card page -------------------------------------------------------------------------------------


def test_the_page_needs_no_sign_in_and_has_a_card_form(deal):
    response = Client().get(deal["link"])

    assert response.status_code == 200
    html = response.content.decode()
    assert "149.99 USD" in html
    assert re.search(r'<input[^>]+name="card_number"', html)
    assert re.search(r'<label for="card_number">', html)
    assert "Sandbox" in html


def test_a_succeeding_test_card_pays_through_the_webhook_and_returns_to_the_deal(deal):
    response = pay_with(deal["link"], "4242 4242 4242 4242")

    assert response.status_code == 302
    assert response["Location"].endswith(f"/{deal['id']}") and "/checkout/" not in response["Location"]
    assert state_of(deal["as_buyer"], deal["id"]) == "FUNDS_HELD"
    [hook] = WebhookEvent.objects.filter(event_type="payment_intent.succeeded")
    assert hook.status == "processed" and hook.provider == "sandbox"
    assert "4242" not in hook.body  # the card number is never stored
    escrow = assert_money_invariant(deal["id"])
    assert escrow.received_minor == 14999 and escrow.held_minor == 14999


def test_a_declined_card_changes_nothing_and_says_why(deal):
    before = Escrow.objects.get(pk=deal["id"])

    response = pay_with(deal["link"], "4000 0000 0000 0002")

    assert response.status_code == 402
    assert "Your card was declined." in response.content.decode()
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"
    escrow = assert_money_invariant(deal["id"])
    assert (escrow.received_minor, escrow.held_minor, escrow.version) == (0, 0, before.version)
    assert "EscrowFundsHeld" not in outbox_types(deal["id"]) and "PaymentSucceeded" not in outbox_types(deal["id"])
    assert outbox_types(deal["id"]).count("PaymentFailed") == 1
    assert PaymentArtifact.objects.get(escrow_id=deal["id"], kind="payment").status == "pending"

    # The buyer tries another card and pays.
    assert pay_with(deal["link"], "4242424242424242").status_code == 302
    assert state_of(deal["as_buyer"], deal["id"]) == "FUNDS_HELD"


def test_each_decline_is_its_own_attempt(deal):
    assert pay_with(deal["link"], "4000 0000 0000 9995").status_code == 402
    response = pay_with(deal["link"], "4000 0000 0000 0002")
    assert response.status_code == 402 and "Your card was declined." in response.content.decode()
    assert outbox_types(deal["id"]).count("PaymentFailed") == 2
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"


def test_a_double_submit_pays_once(deal):
    first = pay_with(deal["link"], "4242 4242 4242 4242")
    second = pay_with(deal["link"], "4242 4242 4242 4242")

    assert first.status_code == 302
    assert second.status_code == 409 and "This deal is paid" in second.content.decode()
    types = outbox_types(deal["id"])
    assert types.count("PaymentSucceeded") == 1 and types.count("EscrowFundsHeld") == 1
    assert assert_money_invariant(deal["id"]).received_minor == 14999


@pytest.mark.parametrize(
    ("number", "words"),
    [
        ("4242 4242 4242 4241", "Your card number is invalid."),
        ("4242", "Your card number is incomplete."),
        ("", "Your card number is incomplete."),
        ("４２４２４２４２４２４２４２４２", "Your card number is incomplete."),
    ],
)
def test_a_malformed_card_number_is_refused_before_any_payment(deal, number, words):
    before = counts()
    response = pay_with(deal["link"], number)

    assert response.status_code == 400
    assert words in response.content.decode()
    assert counts() == before
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"


def test_extra_or_repeated_form_fields_are_refused(deal):
    before = counts()
    assert Client().post(deal["link"], {"card_number": "4242424242424242", "amount": "0.01"}).status_code == 400
    assert Client().post(deal["link"], {"card_number": ["4000000000000002", "4242424242424242"]}).status_code == 400
    assert counts() == before


def test_the_form_is_csrf_protected(deal):
    before = counts()
    response = Client(enforce_csrf_checks=True).post(deal["link"], {"card_number": "4242424242424242"})
    assert response.status_code == 403
    assert counts() == before
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"

    browser = Client(enforce_csrf_checks=True)
    page = browser.get(deal["link"]).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert (
        browser.post(deal["link"], {"card_number": "4242424242424242", "csrfmiddlewaretoken": csrf}).status_code == 302
    )


# --- links that do not open ------------------------------------------------------------------------------


def tampered(link: str) -> list[str]:
    token = link.removeprefix("/checkout/")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    value, signature = token.rsplit(":", 1)
    return [
        f"/checkout/{flipped}",
        f"/checkout/{token[:-5]}",
        f"/checkout/x{token}",
        f"/checkout/{value.replace(value[3], 'Q' if value[3] != 'Q' else 'R', 1)}:{signature}",
        "/checkout/not-a-token",
    ]


def test_a_tampered_link_is_a_404_page_and_changes_nothing(deal):
    before = counts()
    for link in tampered(deal["link"]):
        page = Client().get(link)
        assert page.status_code == 404, link
        assert "not valid" in page.content.decode()
        assert Client().post(link, {"card_number": "4242424242424242"}).status_code == 404
        assert Client().get(f"{link}/status").status_code == 404
    assert counts() == before
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"


def test_an_expired_link_is_a_410_page_and_changes_nothing(deal):
    past = timezone.now() - datetime.timedelta(seconds=1)
    link = f"/checkout/{checkout_token(escrow_id=deal['id'], expires_at=past)}"
    before = counts()

    page = Client().get(link)
    assert page.status_code == 410 and "expired" in page.content.decode()
    assert Client().post(link, {"card_number": "4242424242424242"}).status_code == 410
    assert counts() == before
    assert state_of(deal["as_buyer"], deal["id"]) == "AWAIT_FUNDS"


def test_a_link_signed_for_another_purpose_does_not_open(deal):
    from django.core import signing

    forged = signing.dumps({"e": deal["id"], "x": 4102444800}, salt="another.purpose")
    assert Client().get(f"/checkout/{forged}").status_code == 404


def test_a_cancelled_deal_cannot_be_paid(deal):
    from tests.helpers import act

    assert act(deal["as_buyer"], deal["id"], "cancel").status_code == 202
    settle()
    before = counts()
    response = pay_with(deal["link"], "4242 4242 4242 4242")
    assert response.status_code == 409 and "not awaiting payment" in response.content.decode()
    assert counts() == before
    assert state_of(deal["as_buyer"], deal["id"]) == "CANCELLED"


@pytest.mark.postgres_only
@pytest.mark.parametrize("round_", range(3))
def test_two_submits_at_the_same_moment_pay_once(deal, round_):
    from tests.gateway.test_concurrency import at_once

    answers = at_once(
        lambda: Client().post(deal["link"], {"card_number": "4242 4242 4242 4242"}),
        lambda: Client().post(deal["link"], {"card_number": "4242424242424242"}),
    )
    settle()

    assert sorted(r.status_code for r in answers) in ([302, 302], [302, 409])
    types = outbox_types(deal["id"])
    assert types.count("PaymentSucceeded") == 1 and types.count("EscrowFundsHeld") == 1
    assert assert_money_invariant(deal["id"]).received_minor == 14999


def test_a_deal_awaiting_acceptance_has_no_checkout_link_until_accepted(api_client, buyer, seller):
    from tests.helpers import accept_escrow, create_escrow

    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, accept=False)["escrow_id"]
    settle()
    proposed = as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()
    assert proposed["state"] == "AWAIT_ACCEPTANCE" and "payment" not in proposed

    accept_escrow(seller, escrow_id)
    settle()
    link = checkout_link(as_buyer, escrow_id)
    assert Client().get(link).status_code == 200


def test_the_link_is_the_same_every_second_and_a_link_issued_with_a_signing_time_still_opens(deal, monkeypatch):
    """The link carries its own expiry and no signing time, so the buyer's escrow (and its ETag) does
    not change from one second to the next; links issued before that (`signing.dumps`) keep working."""
    import time

    from django.core import signing

    from apps.payments.checkout import LINK_SALT, checkout_token_read

    first = deal["as_buyer"].get(f"/api/v1/escrows/{deal['id']}")
    assert first.status_code == 200
    deadline = timezone.now() + datetime.timedelta(hours=1)
    legacy = signing.dumps({"e": deal["id"], "x": int(deadline.timestamp())}, salt=LINK_SALT)
    later = time.time() + 5
    monkeypatch.setattr(signing.time, "time", lambda: later)
    again = deal["as_buyer"].get(f"/api/v1/escrows/{deal['id']}")
    assert again.json()["payment"]["checkout_url"] == first.json()["payment"]["checkout_url"]
    assert again["ETag"] == first["ETag"]
    assert deal["as_buyer"].get(f"/api/v1/escrows/{deal['id']}", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304

    assert checkout_token_read(legacy).escrow_id == deal["id"]
    assert Client().get(f"/checkout/{legacy}").status_code == 200
    assert Client().get(deal["link"]).status_code == 200
    # Neither format opens once tampered with.
    assert Client().get(f"{deal['link']}x").status_code == 404
    assert Client().get(f"/checkout/{legacy.rsplit(':', 1)[0]}").status_code == 404
