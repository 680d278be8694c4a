"""Two-sided deals through the REST API: either party creates, the other accepts or declines, and every
refusal is a precise problem+json answer that changes nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from apps.escrow.models import Escrow
from apps.notifications.models import DiscordLink
from apps.notifications.public import user_for_discord_id
from apps.outbox.models import OutboxMessage
from tests.gateway.support import assert_problem, error_fields, settle, table_counts
from tests.helpers import act, client_for, pay, state_of

ESCROWS = "/api/v1/escrows"
SNOWFLAKE = 80351110224678912


def propose(client: Any, **fields: Any) -> dict[str, Any]:
    body = {"amount": "149.99", "currency": "USD", "description": "Dominus Empyreus", **fields}
    response = client.post(ESCROWS, body, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "AWAIT_ACCEPTANCE"
    settle()
    return response.json()


def detail(client: Any, escrow_id: str) -> dict[str, Any]:
    response = client.get(f"{ESCROWS}/{escrow_id}")
    assert response.status_code == 200, response.content
    return response.json()


def payment_intents(escrow_id: str) -> int:
    return OutboxMessage.objects.filter(aggregate_id=escrow_id, type__endswith=".CreatePaymentIntent").count()


def test_a_seller_proposes_the_buyer_accepts_and_pays(api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)

    escrow_id = propose(as_seller, role="seller", counterparty=buyer.username)["escrow_id"]

    shown = detail(as_buyer, escrow_id)
    assert (shown["buyer"], shown["seller"], shown["created_by"], shown["creator_role"]) == (
        buyer.pk,
        seller.pk,
        seller.pk,
        "seller",
    )
    assert shown["state"] == "AWAIT_ACCEPTANCE" and shown["acceptance_deadline"] and not shown["funding_deadline"]
    assert shown["actions"] == ["accept", "decline"] and "payment" not in shown
    assert detail(as_seller, escrow_id)["actions"] == ["cancel"]
    assert payment_intents(escrow_id) == 0

    accepted = act(as_buyer, escrow_id, "accept")
    assert accepted.status_code == 202 and accepted.json()["state"] == "AWAIT_FUNDS"
    assert accepted["Location"] == f"{ESCROWS}/{escrow_id}"
    settle()
    shown = detail(as_buyer, escrow_id)
    assert shown["funding_deadline"] and shown["payment"]["provider"] == "sandbox"
    assert shown["actions"] == ["pay", "cancel"]
    assert payment_intents(escrow_id) == 1

    assert pay(as_buyer, escrow_id).status_code == 202
    assert state_of(as_seller, escrow_id) == "FUNDS_HELD"


@pytest.mark.parametrize("name", ["id", "username"])
def test_the_counterparty_may_be_named_by_id_or_username(api_client, buyer, seller, name):
    value = seller.pk if name == "id" else seller.username
    escrow_id = propose(api_client(buyer), counterparty=value)["escrow_id"]
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.buyer_id, escrow.seller_id, escrow.creator_role) == (buyer.pk, seller.pk, "buyer")


def test_a_deal_with_a_discord_user_waits_for_them_and_is_theirs_on_first_sign_in(api_client, buyer):
    users_before = get_user_model().objects.count()

    escrow_id = propose(api_client(buyer), counterparty=f"discord:{SNOWFLAKE}")["escrow_id"]

    # an account was made and linked to that Discord id; the deal names it as the seller
    link = DiscordLink.objects.get(discord_user_id=SNOWFLAKE)
    assert get_user_model().objects.count() == users_before + 1
    assert Escrow.objects.get(pk=escrow_id).seller_id == link.user_id
    # the first sign-in with that Discord id finds that same account, which may accept
    arriving = user_for_discord_id(discord_user_id=SNOWFLAKE, username_hint="newcomer")
    assert arriving.pk == link.user_id
    assert act(client_for(arriving), escrow_id, "accept").status_code == 202
    # a second deal naming the same Discord id reuses the account
    again = propose(api_client(buyer), counterparty=f"discord:{SNOWFLAKE}")["escrow_id"]
    assert Escrow.objects.get(pk=again).seller_id == link.user_id
    assert get_user_model().objects.count() == users_before + 1


def test_the_old_seller_field_still_creates_a_buyer_deal(api_client, buyer, seller):
    escrow_id = propose(api_client(buyer), seller=seller.username)["escrow_id"]
    assert Escrow.objects.get(pk=escrow_id).created_by_id == buyer.pk


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"role": "admin", "counterparty": "seller"}, "role"),
        ({"role": "seller", "seller": "seller"}, "seller"),
        ({"counterparty": "seller", "seller": "seller"}, "seller"),
        ({}, "counterparty"),
        ({"counterparty": "buyer"}, "counterparty"),
        ({"counterparty": "nobody-by-that-name"}, "counterparty"),
        ({"counterparty": "discord:abc"}, "counterparty"),
        ({"counterparty": "discord:0"}, "counterparty"),
        ({"counterparty": "discord:99999999999999999999"}, "counterparty"),
        ({"counterparty": True}, "counterparty"),
        ({"counterparty": "sel\u0000ler"}, "counterparty"),
        ({"counterparty": f"discord:{SNOWFLAKE}", "amount": "0.001"}, "amount"),
    ],
    ids=[
        "unknown-role",
        "seller-field-for-a-seller",
        "both-names",
        "no-counterparty",
        "self",
        "unknown-user",
        "discord-not-numeric",
        "discord-zero",
        "discord-too-big",
        "boolean",
        "nul-byte",
        "discord-with-a-bad-amount",
    ],
)
def test_bad_create_bodies_are_refused_and_change_nothing(api_client, buyer, seller, fields, field):
    users_before, before = get_user_model().objects.count(), table_counts()
    body = {"amount": "149.99", "currency": "USD", "description": "x", **fields}

    response = api_client(buyer).post(ESCROWS, body, format="json")

    assert field in error_fields(assert_problem(response, 400, "validation_error"))
    assert table_counts() == before
    # a refused request makes no account for a Discord id, either
    assert get_user_model().objects.count() == users_before
    assert not DiscordLink.objects.exists()


def test_the_creator_cannot_accept_or_decline_their_own_deal(api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = propose(as_buyer, counterparty=seller.username)["escrow_id"]
    before = table_counts()

    for action in ("accept", "decline"):
        body = assert_problem(act(as_buyer, escrow_id, action), 403, "not_allowed")
        assert body["state"] == "AWAIT_ACCEPTANCE"
    assert table_counts() == before
    # ...and the counterparty cannot cancel it: declining says who walked away
    assert_problem(act(api_client(seller), escrow_id, "cancel", {"reason": "no"}), 403, "not_allowed")
    assert table_counts() == before


def test_a_stranger_learns_nothing(api_client, buyer, seller, stranger):
    escrow_id = propose(api_client(buyer), counterparty=seller.username)["escrow_id"]
    before = table_counts()
    for action in ("accept", "decline"):
        assert_problem(act(api_client(stranger), escrow_id, action), 404, "escrow_not_found")
    assert table_counts() == before
    assert state_of(api_client(buyer), escrow_id) == "AWAIT_ACCEPTANCE"


def test_accept_twice_and_accept_after_decline_are_conflicts(api_client, buyer, seller):
    as_seller = api_client(seller)
    accepted = propose(api_client(buyer), counterparty=seller.username)["escrow_id"]
    declined = propose(api_client(buyer), counterparty=seller.username)["escrow_id"]
    assert act(as_seller, accepted, "accept").status_code == 202
    assert act(as_seller, declined, "decline", {"reason": "not at that price"}).status_code == 202
    settle()
    before = table_counts()

    assert_problem(act(as_seller, accepted, "accept"), 409, "invalid_transition")
    assert_problem(act(as_seller, accepted, "decline"), 409, "invalid_transition")
    body = assert_problem(act(as_seller, declined, "accept"), 409, "invalid_transition")
    assert body["state"] == "CANCELLED"
    assert table_counts() == before
    assert payment_intents(accepted) == 1 and payment_intents(declined) == 0
    timeline = [e["type"] for e in api_client(buyer).get(f"{ESCROWS}/{declined}/events").json()]
    assert timeline == ["EscrowCreated", "EscrowDeclined"]


def test_accept_with_the_same_idempotency_key_has_one_effect(api_client, buyer, seller):
    as_seller = api_client(seller)
    escrow_id = propose(api_client(buyer), counterparty=seller.username)["escrow_id"]

    first = act(as_seller, escrow_id, "accept", HTTP_IDEMPOTENCY_KEY="accept-1")
    settle()
    after_first = table_counts()
    again = act(as_seller, escrow_id, "accept", HTTP_IDEMPOTENCY_KEY="accept-1")

    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["command_id"] == first.json()["command_id"]
    assert table_counts() == after_first
    assert payment_intents(escrow_id) == 1


def test_unknown_fields_on_accept_and_decline_are_refused(api_client, buyer, seller):
    as_seller = api_client(seller)
    escrow_id = propose(api_client(buyer), counterparty=seller.username)["escrow_id"]
    before = table_counts()
    assert "price" in error_fields(
        assert_problem(act(as_seller, escrow_id, "accept", {"price": "1.00"}), 400, "validation_error")
    )
    assert "reason" in error_fields(
        assert_problem(act(as_seller, escrow_id, "decline", {"reason": 7}), 400, "validation_error")
    )
    assert table_counts() == before


def test_the_creator_cancels_before_acceptance_and_nothing_is_paid(api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = propose(as_buyer, counterparty=seller.username)["escrow_id"]
    assert act(as_buyer, escrow_id, "cancel", {"reason": "found it elsewhere"}).status_code == 202
    assert state_of(as_buyer, escrow_id) == "CANCELLED"
    assert_problem(act(api_client(seller), escrow_id, "accept"), 409, "invalid_transition")
    assert payment_intents(escrow_id) == 0


@pytest.mark.postgres_only
def test_accept_racing_the_creators_cancel_is_serialised(api_client, buyer, seller):
    """Two real connections. The row lock orders them: cancel first, and the accept is a 409 that writes
    nothing; accept first, and the buyer's cancel is then a legal cancel of an unfunded escrow. Either way
    the deal ends cancelled, once, with a payment set up only if the accept came first."""
    escrow_id = propose(api_client(buyer), counterparty=seller.username)["escrow_id"]
    calls = {
        "accept": (client_for(seller), "accept", None),
        "cancel": (client_for(buyer), "cancel", {"reason": "changed my mind"}),
    }
    answers: dict[str, Any] = {}
    start = threading.Barrier(2)

    def run(name: str) -> None:
        client, action, body = calls[name]
        try:
            start.wait()
            answers[name] = act(client, escrow_id, action, body)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    settle()

    assert answers["cancel"].status_code == 202, answers["cancel"].content
    assert Escrow.objects.get(pk=escrow_id).state == "CANCELLED"
    assert state_of(api_client(buyer), escrow_id) == "CANCELLED"
    timeline = [e["type"] for e in api_client(buyer).get(f"{ESCROWS}/{escrow_id}/events").json()]
    if answers["accept"].status_code == 202:
        assert timeline == ["EscrowCreated", "EscrowAccepted", "EscrowCancelled"]
        assert payment_intents(escrow_id) == 1
    else:
        assert_problem(answers["accept"], 409, "invalid_transition")
        assert timeline == ["EscrowCreated", "EscrowCancelled"]
        assert payment_intents(escrow_id) == 0
