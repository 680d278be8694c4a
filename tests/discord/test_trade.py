"""A whole sandbox trade driven by Discord interactions from two people who never used the product, and
what a stranger's or a stale click does (nothing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.escrow.models import Escrow, EscrowEvent
from apps.notifications.public import DiscordLink
from apps.outbox.models import OutboxMessage
from tests.discord.conftest import DiscordUser, Sent, click, create_options, modal_submit, slash
from tests.fakes.discord import FakeDiscord
from tests.gateway.support import settle

pytestmark = pytest.mark.django_db(transaction=True)

BUYER = DiscordUser("1600000000000000001", "gold_buyer")
SELLER = DiscordUser("1600000000000000002", "dominus_dealer")
STRANGER = DiscordUser("1600000000000000003", "lurker")


def escrow_tables() -> dict[str, Any]:
    return {
        "escrows": list(Escrow.objects.values_list("id", "state", "version")),
        "events": EscrowEvent.objects.count(),
        "outbox": OutboxMessage.objects.count(),
    }


def account(user: DiscordUser) -> Any:
    return DiscordLink.objects.select_related("user").get(discord_user_id=int(user.id)).user


def pay_through_the_link(reply: Sent) -> None:
    """The buyer follows the Pay link button to the sandbox checkout and pays with Stripe's test card."""
    [link] = reply.links
    assert link.startswith("http://testserver/checkout/")
    assert (
        Client().post(link.removeprefix("http://testserver"), {"card_number": "4242 4242 4242 4242"}).status_code == 302
    )
    settle()


def status(interact: Callable[[dict[str, Any]], Sent], user: DiscordUser, escrow_id: str) -> Sent:
    return interact(slash(user, "status", [{"name": "id", "type": 3, "value": escrow_id}]))


def open_deal(interact: Callable[[dict[str, Any]], Sent], *, accept: bool = True) -> str:
    """The buyer opens a deal with the seller, who accepts it with the button (unless told not to)."""
    created = interact(
        slash(
            BUYER, "create", create_options(SELLER, amount="149.99", item="Dominus Empyreus"), resolved_users=[SELLER]
        )
    )
    assert created.type == 4 and created.ephemeral
    escrow_id = str(Escrow.objects.get().pk)
    if accept:
        assert "State: **AWAIT_FUNDS**" in interact(click(SELLER, f"escrow:accept:{escrow_id}")).content
    return escrow_id


def test_two_newcomers_trade_through_slash_commands_and_buttons(
    interact: Callable[[dict[str, Any]], Sent], fake_discord: FakeDiscord
) -> None:
    assert get_user_model().objects.count() == 0

    # The buyer opens the deal in a server channel, naming the seller (a USER option, resolved by Discord).
    created = interact(
        slash(
            BUYER, "create", create_options(SELLER, amount="149.99", item="Dominus Empyreus"), resolved_users=[SELLER]
        )
    )
    escrow = Escrow.objects.get()
    escrow_id = str(escrow.pk)
    buyer, seller = account(BUYER), account(SELLER)
    assert (escrow.buyer_id, escrow.seller_id, escrow.amount_minor, escrow.currency) == (
        buyer.pk,
        seller.pk,
        14999,
        "USD",
    )
    assert escrow.description == "Dominus Empyreus"
    assert created.type == 4 and created.ephemeral
    assert "State: **AWAIT_ACCEPTANCE**" in created.content and escrow_id in created.content
    assert f"the seller is <@{SELLER.id}>" in created.content
    assert created.custom_ids == [f"escrow:cancel:{escrow_id}"] and created.links == []

    # The seller, who never used the product, gets a DM with Accept / Decline, and accepts from it.
    [proposal] = fake_discord.messages_to(int(SELLER.id))
    assert "proposes a deal for 149.99 USD" in proposal.content
    assert proposal.custom_ids == [f"escrow:accept:{escrow_id}", f"escrow:decline:{escrow_id}"]
    accepted = interact(click(SELLER, proposal.custom_ids[0]))
    assert accepted.type == 7 and "You accepted the deal." in accepted.content
    assert "State: **AWAIT_FUNDS**" in accepted.content and accepted.links == []

    # The buyer is told by DM, with Pay: a link button to the checkout page; /escrow status shows it too.
    told = [m for m in fake_discord.messages_to(int(BUYER.id)) if "accepted" in m.content]
    assert len(told) == 1 and len(told[0].links) == 1
    seen_by_buyer = status(interact, BUYER, escrow_id)
    assert "State: **AWAIT_FUNDS**" in seen_by_buyer.content and len(seen_by_buyer.links) == 1

    # The buyer pays through the Pay link's sandbox checkout (no sign-in: the link is the capability).
    pay_through_the_link(told[0])

    # The seller sees the deal with a Deliver button, and clicks it (in a DM with the bot).
    seen = status(interact, SELLER, escrow_id)
    assert "State: **FUNDS_HELD**" in seen.content
    assert f"escrow:deliver:{escrow_id}" in seen.custom_ids
    delivered = interact(click(SELLER, f"escrow:deliver:{escrow_id}"))
    assert delivered.type == 7  # the message with the button is updated in place
    assert "Marked delivered." in delivered.content and "State: **DELIVERED**" in delivered.content
    assert f"escrow:deliver:{escrow_id}" not in delivered.custom_ids

    # The buyer releases from the status reply's button.
    seen = status(interact, BUYER, escrow_id)
    assert seen.custom_ids == [f"escrow:release:{escrow_id}", f"escrow:dispute:{escrow_id}"]
    released = interact(click(BUYER, f"escrow:release:{escrow_id}", in_dm=False))
    assert released.type == 7
    assert released.custom_ids == []

    final = status(interact, BUYER, escrow_id)
    assert "State: **RELEASED**" in final.content
    assert final.custom_ids == []
    assert list(EscrowEvent.objects.filter(escrow_id=escrow_id).order_by("version").values_list("type", flat=True)) == [
        "escrow.v1.EscrowCreated",
        "escrow.v1.EscrowAccepted",
        "escrow.v1.EscrowFundsHeld",
        "escrow.v1.EscrowDelivered",
        "escrow.v1.EscrowReleaseRequested",
        "escrow.v1.EscrowReleased",
    ]
    listed = interact(slash(SELLER, "list"))
    assert escrow_id in listed.content and "**RELEASED**" in listed.content and "(you sell)" in listed.content


def test_a_seller_opens_the_deal_and_the_buyer_declines_it(
    interact: Callable[[dict[str, Any]], Sent], fake_discord: FakeDiscord
) -> None:
    created = interact(
        slash(
            SELLER,
            "create",
            create_options(BUYER, amount="20.00", item="Valkyrie Helm", role="seller"),
            resolved_users=[BUYER],
        )
    )
    escrow = Escrow.objects.get()
    escrow_id = str(escrow.pk)
    assert (escrow.seller_id, escrow.buyer_id) == (account(SELLER).pk, account(BUYER).pk)
    assert "You are the seller" in created.content and "State: **AWAIT_ACCEPTANCE**" in created.content
    # The creator cannot accept their own deal; the button is refused and changes nothing.
    before = escrow_tables()
    refused = interact(click(SELLER, f"escrow:accept:{escrow_id}"))
    assert refused.ephemeral and "cannot accept this deal now" in refused.content
    assert escrow_tables() == before

    [proposal] = fake_discord.messages_to(int(BUYER.id))
    assert proposal.custom_ids == [f"escrow:accept:{escrow_id}", f"escrow:decline:{escrow_id}"]
    declined = interact(click(BUYER, f"escrow:decline:{escrow_id}"))

    assert declined.type == 7 and "State: **CANCELLED**" in declined.content and declined.custom_ids == []
    assert Escrow.objects.get().state == "CANCELLED"


def test_a_strangers_click_on_a_forwarded_button_is_refused_in_words_and_changes_nothing(
    interact: Callable[[dict[str, Any]], Sent],
) -> None:
    escrow_id = open_deal(interact)
    pay_through_the_link(status(interact, BUYER, escrow_id))
    before = escrow_tables()

    for action in ("accept", "decline", "deliver", "cancel", "release", "dispute"):
        refused = interact(click(STRANGER, f"escrow:{action}:{escrow_id}"))
        assert refused.type == 4 and refused.ephemeral
        assert "someone else's deal" in refused.content and "nothing was changed" in refused.content
    nosy = status(interact, STRANGER, escrow_id)
    assert nosy.ephemeral and "no deal with that id" in nosy.content and "FUNDS_HELD" not in nosy.content
    submitted = interact(modal_submit(STRANGER, f"escrow:dispute:{escrow_id}", "I want this money to move"))
    assert "someone else's deal" in submitted.content

    assert escrow_tables() == before


def test_a_party_pressing_a_button_that_is_not_theirs_now_is_refused_and_changes_nothing(
    interact: Callable[[dict[str, Any]], Sent],
) -> None:
    escrow_id = open_deal(interact)
    before = escrow_tables()

    # The buyer presses the seller's Deliver (forwarded to them), and a Release before anything was paid.
    for action in ("deliver", "release"):
        refused = interact(click(BUYER, f"escrow:{action}:{escrow_id}"))
        assert refused.type == 4 and refused.ephemeral
        assert "it is AWAIT_FUNDS" in refused.content and "Nothing was changed" in refused.content
    assert escrow_tables() == before

    # A stale button: the deal was paid and delivered since; the old Cancel no longer applies to the buyer.
    pay_through_the_link(status(interact, BUYER, escrow_id))
    assert interact(click(SELLER, f"escrow:deliver:{escrow_id}")).type == 7
    before = escrow_tables()
    stale = interact(click(BUYER, f"escrow:cancel:{escrow_id}"))
    assert stale.ephemeral and "cannot cancel this deal now: it is DELIVERED" in stale.content
    assert escrow_tables() == before


def test_dispute_opens_a_modal_and_its_submission_carries_the_statement(
    interact: Callable[[dict[str, Any]], Sent],
) -> None:
    escrow_id = open_deal(interact)
    pay_through_the_link(status(interact, BUYER, escrow_id))
    before = escrow_tables()

    modal = interact(click(BUYER, f"escrow:dispute:{escrow_id}"))

    assert modal.type == 9
    assert modal.data["custom_id"] == f"escrow:dispute:{escrow_id}"
    [row] = modal.data["components"]
    assert row["components"][0]["type"] == 4 and row["components"][0]["custom_id"] == "statement"
    assert escrow_tables() == before  # opening the form changes nothing

    empty = interact(modal_submit(BUYER, f"escrow:dispute:{escrow_id}", "   "))
    assert empty.ephemeral and "needs a statement" in empty.content
    assert escrow_tables() == before

    disputed = interact(modal_submit(BUYER, f"escrow:dispute:{escrow_id}", "The seller never logged in to trade."))
    assert disputed.type == 7 and "State: **DISPUTED**" in disputed.content
    escrow = Escrow.objects.get(pk=escrow_id)
    assert escrow.state == "DISPUTED" and escrow.dispute_reason == "The seller never logged in to trade."


def test_bad_create_options_are_answered_in_words_and_open_nothing(interact: Callable[[dict[str, Any]], Sent]) -> None:
    cases = [
        (create_options(SELLER, amount="12.345"), "at most two decimals"),
        (create_options(SELLER, amount="-5"), "at most two decimals"),
        (create_options(SELLER, amount="0.50"), "amount must be from 1.00 USD"),
        (create_options(SELLER, item="  "), "Say what is traded"),
        (create_options(SELLER, role="broker"), "role must be buyer or seller"),
        (create_options(BUYER), "cannot open a deal with yourself"),
    ]
    for options, words in cases:
        answer = interact(slash(BUYER, "create", options, resolved_users=[SELLER, BUYER]))
        assert answer.ephemeral and words in answer.content, (options, answer.content)
    bot = DiscordUser("1600000000000000099", "some_bot")
    payload = slash(BUYER, "create", create_options(bot), resolved_users=[bot])
    payload["data"]["resolved"]["users"][bot.id]["bot"] = True
    assert "not a bot" in interact(payload).content
    assert Escrow.objects.count() == 0


def test_a_click_delivered_twice_has_one_effect(interact: Callable[[dict[str, Any]], Sent]) -> None:
    escrow_id = open_deal(interact)
    pay_through_the_link(status(interact, BUYER, escrow_id))
    payload = click(SELLER, f"escrow:deliver:{escrow_id}")

    first = interact(payload)
    events = EscrowEvent.objects.count()
    again = interact(payload)

    assert again.body == first.body
    assert EscrowEvent.objects.count() == events
    assert EscrowEvent.objects.filter(escrow_id=escrow_id, type="escrow.v1.EscrowDelivered").count() == 1
