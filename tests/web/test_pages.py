"""The web app's pages through Django's test client: a whole trade, who may see and do what, CSRF,
tampered hidden fields, and refusals shown in words with nothing changed."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.test import Client

from apps.escrow.models import Escrow, EscrowEvent
from tests.gateway.support import settle
from tests.web.conftest import csrf_token, new_deal, pay_on_checkout, post_form


def page_text(response: Any) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def state_on_page(client: Client, escrow_id: str) -> str:
    response = client.get(f"/deals/{escrow_id}")
    assert response.status_code == 200
    return re.search(r'data-state="([A-Z_]+)"', response.content.decode()).group(1)


def test_a_whole_trade_through_the_pages(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer, as_seller = browser_of(buyer), browser_of(seller)

    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    page = as_buyer.get(f"/deals/{escrow_id}")
    assert "149.99 USD" in page_text(page)
    # the creator waits for the other party: no accept, no pay yet, but may cancel
    assert state_on_page(as_buyer, escrow_id) == "AWAIT_ACCEPTANCE"
    html = page.content.decode()
    assert 'id="action-accept"' not in html and 'id="action-pay"' not in html and 'id="action-cancel"' in html
    # the seller sees the deal and its terms to accept or decline
    seller_page = as_seller.get(f"/deals/{escrow_id}").content.decode()
    assert 'id="action-accept"' in seller_page and 'id="action-decline"' in seller_page
    assert 'id="action-pay"' not in seller_page and 'id="action-deliver"' not in seller_page
    assert post_form(as_seller, f"/deals/{escrow_id}/accept").status_code == 302
    assert state_on_page(as_buyer, escrow_id) == "AWAIT_FUNDS"
    assert 'id="action-pay"' in as_buyer.get(f"/deals/{escrow_id}").content.decode()

    assert pay_on_checkout(as_buyer, escrow_id).status_code == 302
    assert state_on_page(as_seller, escrow_id) == "FUNDS_HELD"
    assert 'id="action-deliver"' in as_seller.get(f"/deals/{escrow_id}").content.decode()

    assert post_form(as_seller, f"/deals/{escrow_id}/deliver").status_code == 302
    assert 'id="action-release"' in as_buyer.get(f"/deals/{escrow_id}").content.decode()
    assert post_form(as_buyer, f"/deals/{escrow_id}/release").status_code == 302

    assert state_on_page(as_buyer, escrow_id) == state_on_page(as_seller, escrow_id) == "RELEASED"
    buyer_timeline = re.search(
        r'<ol class="timeline" id="timeline">(.*?)</ol>', as_buyer.get(f"/deals/{escrow_id}").content.decode(), re.S
    ).group(1)
    assert "You opened the deal" in buyer_timeline
    assert f"{seller.username} accepted the terms" in buyer_timeline
    assert "The seller was paid" in buyer_timeline
    assert "no-actions" in as_buyer.get(f"/deals/{escrow_id}").content.decode()
    lists = page_text(as_seller.get("/deals/"))
    assert "Dominus Empyreus" in lists and "Completed" in lists


def test_a_stranger_gets_the_404_page_and_changes_nothing(
    browser_of: Any, buyer: Any, seller: Any, stranger: Any
) -> None:
    escrow_id = new_deal(browser_of(buyer), counterparty=seller.username)
    as_stranger = browser_of(stranger)
    events = EscrowEvent.objects.count()

    page = as_stranger.get(f"/deals/{escrow_id}")
    assert page.status_code == 404 and "Not found" in page_text(page)
    assert "Dominus" not in page_text(page)
    assert 'id="action-pay"' not in page.content.decode()
    for action in ("deliver", "release", "cancel", "dispute", "evidence"):
        response = post_form(as_stranger, f"/deals/{escrow_id}/{action}", {"reason": "mine now"})
        assert response.status_code == 404, action
    # an id that does not exist looks the same as someone else's
    assert as_stranger.get(f"/deals/{uuid.uuid4()}").status_code == 404
    assert EscrowEvent.objects.count() == events
    assert Escrow.objects.get(pk=escrow_id).state == "AWAIT_ACCEPTANCE"


def test_signed_out_people_are_sent_to_sign_in(buyer: Any) -> None:
    response = Client().get("/deals/")
    assert response.status_code == 302 and response["Location"].startswith("/signin/?next=/deals/")


def test_a_post_without_the_csrf_token_is_refused(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer = browser_of(buyer)
    escrows = Escrow.objects.count()

    response = as_buyer.post(
        "/deals/new",
        {
            "role": "buyer",
            "counterparty": seller.username,
            "amount": "10.00",
            "currency": "USD",
            "description": "x",
            "nonce": str(uuid.uuid4()),
        },
    )
    assert response.status_code == 403
    assert Escrow.objects.count() == escrows

    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    response = as_buyer.post(f"/deals/{escrow_id}/cancel", {"nonce": str(uuid.uuid4())})
    assert response.status_code == 403
    settle()
    assert Escrow.objects.get(pk=escrow_id).state == "AWAIT_ACCEPTANCE"


def test_a_refused_command_is_shown_in_words_and_changes_nothing(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer, as_seller = browser_of(buyer), browser_of(seller)
    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    events = EscrowEvent.objects.filter(escrow_id=escrow_id).count()

    # the creator forges an accept of their own deal, the seller a release, the buyer a delivery
    for client, action in ((as_buyer, "accept"), (as_seller, "release"), (as_buyer, "deliver")):
        response = post_form(client, f"/deals/{escrow_id}/{action}", follow=True)
        words = page_text(response)
        assert "cannot be done now" in words or "may not do that" in words, action

    assert EscrowEvent.objects.filter(escrow_id=escrow_id).count() == events
    assert Escrow.objects.get(pk=escrow_id).state == "AWAIT_ACCEPTANCE"


def test_the_same_form_sent_twice_opens_one_deal(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer = browser_of(buyer)
    nonce = str(uuid.uuid4())
    first = new_deal(as_buyer, counterparty=seller.username, nonce=nonce)
    second = new_deal(as_buyer, counterparty=seller.username, nonce=nonce)
    assert first == second
    assert Escrow.objects.count() == 1


def test_tampered_hidden_fields_are_refused(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer = browser_of(buyer)
    escrows = Escrow.objects.count()
    body = {"role": "buyer", "counterparty": seller.username, "amount": "10.00", "currency": "USD", "description": "x"}
    for nonce in (" ", "not-a-uuid", "1 OR 1=1"):
        response = post_form(as_buyer, "/deals/new", body, nonce=nonce)
        assert response.status_code == 200 and "The form was incomplete" in page_text(response)
    # a role that is not a choice, a currency we do not take, an amount with three decimals
    for field, value in (("role", "staff"), ("currency", "XXX"), ("amount", "1.001"), ("amount", "-5")):
        response = post_form(as_buyer, "/deals/new", {**body, field: value})
        assert response.status_code == 400, (field, value)
    assert Escrow.objects.count() == escrows


def test_another_users_ids_do_not_make_them_a_party(browser_of: Any, buyer: Any, seller: Any, stranger: Any) -> None:
    as_buyer = browser_of(buyer)
    # trading with oneself, by name or by id, is refused
    for me in (buyer.username, str(buyer.pk)):
        response = post_form(
            as_buyer,
            "/deals/new",
            {"role": "buyer", "counterparty": me, "amount": "10.00", "currency": "USD", "description": "x"},
        )
        assert response.status_code == 400 and "yourself" in page_text(response)
    response = post_form(
        as_buyer,
        "/deals/new",
        {
            "role": "buyer",
            "counterparty": "nobody_by_that_name",
            "amount": "10.00",
            "currency": "USD",
            "description": "x",
        },
    )
    assert response.status_code == 400 and "no one called" in page_text(response)
    assert Escrow.objects.count() == 0

    # the stranger's deal with the seller is not the buyer's to act on
    theirs = new_deal(Client_for(stranger), counterparty=seller.username)
    assert post_form(as_buyer, f"/deals/{theirs}/cancel").status_code == 404
    assert post_form(as_buyer, f"/deals/{theirs}/accept").status_code == 404
    assert Escrow.objects.get(pk=theirs).state == "AWAIT_ACCEPTANCE"


def Client_for(user: Any) -> Client:  # noqa: N802 - reads like the fixture it stands in for
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_a_dispute_with_a_statement_and_evidence(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer, as_seller = browser_of(buyer), browser_of(seller)
    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    post_form(as_seller, f"/deals/{escrow_id}/accept")
    pay_on_checkout(as_buyer, escrow_id)
    post_form(as_seller, f"/deals/{escrow_id}/deliver")

    from django.core.files.uploadedfile import SimpleUploadedFile

    body = {
        "csrfmiddlewaretoken": csrf_token(as_buyer),
        "nonce": str(uuid.uuid4()),
        "reason": "the item never arrived in my inventory",
        "evidence": SimpleUploadedFile("trade.txt", b"trade log: nothing received\n", "text/plain"),
    }
    response = as_buyer.post(f"/deals/{escrow_id}/dispute", body, follow=True)
    settle()
    assert "The dispute is open" in page_text(response)
    assert "Your evidence was added" in page_text(response)
    escrow = Escrow.objects.get(pk=escrow_id)
    assert escrow.state == "DISPUTED"
    assert escrow.evidence.count() == 1
    # a file that is not a kept type is refused in words, and the dispute stays as it was
    body = {
        "csrfmiddlewaretoken": csrf_token(as_seller),
        "nonce": str(uuid.uuid4()),
        "evidence": SimpleUploadedFile("x.html", b"<html><script>1</script>", "text/html"),
    }
    response = as_seller.post(f"/deals/{escrow_id}/evidence", body, follow=True)
    assert "The file was not kept" in page_text(response)
    assert escrow.evidence.count() == 1


def test_a_deal_can_name_someone_by_their_discord_id(browser_of: Any, buyer: Any) -> None:
    from apps.notifications.public import DiscordLink

    as_buyer = browser_of(buyer)
    escrow_id = new_deal(as_buyer, counterparty="discord:802931155219529748")
    escrow = Escrow.objects.get(pk=escrow_id)
    link = DiscordLink.objects.get(discord_user_id=802931155219529748)
    assert escrow.seller_id == link.user_id != buyer.pk
    # the same id again is the same person, never a second account
    again = new_deal(as_buyer, counterparty="discord:802931155219529748", description="another item")
    assert Escrow.objects.get(pk=again).seller_id == link.user_id
    for bad in ("discord:", "discord:abc", "discord:-5", "discord:" + "9" * 25):
        response = post_form(
            as_buyer,
            "/deals/new",
            {"role": "buyer", "counterparty": bad, "amount": "10.00", "currency": "USD", "description": "x"},
        )
        assert response.status_code == 400, bad
    assert Escrow.objects.count() == 2


def test_a_seller_opens_the_deal_and_the_buyer_accepts_and_pays(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer, as_seller = browser_of(buyer), browser_of(seller)
    escrow_id = new_deal(as_seller, counterparty=buyer.username, role="seller", amount="75.00")
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.buyer_id, escrow.seller_id, escrow.state) == (buyer.pk, seller.pk, "AWAIT_ACCEPTANCE")
    assert 'id="action-accept"' not in as_seller.get(f"/deals/{escrow_id}").content.decode()
    assert post_form(as_buyer, f"/deals/{escrow_id}/accept").status_code == 302
    assert pay_on_checkout(as_buyer, escrow_id).status_code == 302
    assert state_on_page(as_seller, escrow_id) == "FUNDS_HELD"


def test_the_counterparty_declines(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer, as_seller = browser_of(buyer), browser_of(seller)
    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    response = post_form(as_seller, f"/deals/{escrow_id}/decline", {"reason": "sold it elsewhere"}, follow=True)
    assert "You declined the deal" in page_text(response)
    assert state_on_page(as_buyer, escrow_id) == "CANCELLED"
    assert f"{seller.username} declined the deal" in page_text(as_buyer.get(f"/deals/{escrow_id}"))
    # nothing is left to do, and a late accept is refused in words
    response = post_form(as_seller, f"/deals/{escrow_id}/accept", follow=True)
    assert "cannot be done now" in page_text(response)
    assert Escrow.objects.get(pk=escrow_id).state == "CANCELLED"


def test_the_creator_cancels_before_acceptance(browser_of: Any, buyer: Any, seller: Any) -> None:
    as_buyer, as_seller = browser_of(buyer), browser_of(seller)
    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    post_form(as_buyer, f"/deals/{escrow_id}/cancel", {"reason": "changed my mind"})
    assert state_on_page(as_seller, escrow_id) == "CANCELLED"
    assert 'id="action-accept"' not in as_seller.get(f"/deals/{escrow_id}").content.decode()
