"""The bot's command handlers drive a whole lifecycle against the running API (a live server on a
loopback port), as each user's linked account; refusals come back in the API's words."""

from __future__ import annotations

import re

from apps.escrow.models import Escrow
from apps.notifications.bot import NOT_LINKED, EscrowBot
from tests.helpers import pay
from tests.notifications.conftest import BUYER_DISCORD_ID, SELLER_DISCORD_ID

STRANGER_DISCORD_ID = 310000000000000099


def _escrow_id(reply: str) -> str:
    match = re.search(r"Escrow `([0-9a-f-]{36})`", reply)
    assert match, reply
    return match.group(1)


def test_bot_drives_a_lifecycle_through_the_api(live_server, api_client, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    link_discord(seller, SELLER_DISCORD_ID)
    bot = EscrowBot(api_base=f"{live_server.url}/api/v1")

    created = bot.create(discord_user_id=BUYER_DISCORD_ID, request_id="1001", seller="seller", amount="25.00",
                         currency="usd", description="Valkyrie Helm")
    assert created.startswith("Created.") and "**AWAIT_ACCEPTANCE**" in created, created
    escrow_id = _escrow_id(created)
    # Discord redelivering the same interaction does not open a second escrow.
    assert _escrow_id(bot.create(discord_user_id=BUYER_DISCORD_ID, request_id="1001", seller="seller",
                                 amount="25.00", currency="usd", description="Valkyrie Helm")) == escrow_id
    assert Escrow.objects.count() == 1

    # the buyer cannot accept their own deal; the seller does
    refused = bot.accept(discord_user_id=BUYER_DISCORD_ID, request_id="1006", escrow_id=escrow_id)
    assert refused.startswith("Refused:") and "not_allowed" in refused, refused
    accepted = bot.accept(discord_user_id=SELLER_DISCORD_ID, request_id="1007", escrow_id=escrow_id)
    assert accepted.startswith("Accepted.") and "**AWAIT_FUNDS**" in accepted, accepted
    assert "Pay it" in bot.status(discord_user_id=BUYER_DISCORD_ID, escrow_id=escrow_id)

    assert pay(api_client(buyer), escrow_id).status_code == 202
    assert "Deliver the item" in bot.status(discord_user_id=SELLER_DISCORD_ID, escrow_id=escrow_id)

    delivered = bot.deliver(discord_user_id=SELLER_DISCORD_ID, request_id="1002", escrow_id=escrow_id)
    assert "**DELIVERED**" in delivered and "Wait for the buyer" in delivered, delivered

    refused = bot.release(discord_user_id=SELLER_DISCORD_ID, request_id="1003", escrow_id=escrow_id)
    assert refused.startswith("Refused:") and "(the escrow is DELIVERED)" in refused, refused
    assert Escrow.objects.get(pk=escrow_id).state == "DELIVERED"

    released = bot.release(discord_user_id=BUYER_DISCORD_ID, request_id="1004", escrow_id=escrow_id)
    assert released.startswith("Release requested.") and "**RELEASED**" in released, released
    assert "Done: you were paid." in bot.status(discord_user_id=SELLER_DISCORD_ID, escrow_id=escrow_id)
    assert escrow_id in bot.list_escrows(discord_user_id=BUYER_DISCORD_ID, state="RELEASED")

    too_late = bot.dispute(discord_user_id=BUYER_DISCORD_ID, request_id="1005", escrow_id=escrow_id, reason="x")
    assert too_late.startswith("Refused:") and "invalid_transition" in too_late, too_late
    # The DMs of the lifecycle went out alongside.
    assert any("on its way to you" in dm for dm in fake_discord.dms_to(SELLER_DISCORD_ID))


def test_bot_refuses_plainly_and_changes_nothing(live_server, buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    bot = EscrowBot(api_base=f"{live_server.url}/api/v1")

    bad = bot.create(discord_user_id=BUYER_DISCORD_ID, request_id="2001", seller="seller", amount="12.345",
                     currency="USD", description="Helm")
    assert bad.startswith("Refused:") and "amount:" in bad and "validation_error" in bad, bad
    assert bot.create(discord_user_id=STRANGER_DISCORD_ID, request_id="2002", seller="seller", amount="1.00",
                      currency="USD", description="Helm") == NOT_LINKED
    other = bot.status(discord_user_id=BUYER_DISCORD_ID, escrow_id="00000000-0000-0000-0000-000000000000")
    assert "escrow_not_found" in other
    assert Escrow.objects.count() == 0
    assert bot.list_escrows(discord_user_id=BUYER_DISCORD_ID) == "You have no escrows."


def test_bot_link_code_links_the_account_that_redeems_it(api_client, seller, fake_discord):
    reply = EscrowBot(api_base="http://127.0.0.1:9/api/v1").link(discord_user_id=SELLER_DISCORD_ID)
    code = re.search(r"\*\*([A-Z0-9]{5}-[A-Z0-9]{5})\*\*", reply).group(1)

    response = api_client(seller).put("/api/v1/me/discord-link", {"code": code}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["discord_user_id"] == str(SELLER_DISCORD_ID)
