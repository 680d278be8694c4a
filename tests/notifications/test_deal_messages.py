"""Two-sided deals in DMs: the counterparty is asked to accept a proposed deal, and the creator learns
whether it was accepted or declined."""

from __future__ import annotations

from apps.notifications.models import Notification
from tests.gateway.support import settle
from tests.helpers import act, client_for
from tests.notifications.conftest import BUYER_DISCORD_ID, SELLER_DISCORD_ID


def _buttons(dm) -> list[str]:
    return [button.get("custom_id", button.get("url")) for row in dm.components for button in row["components"]]


def _propose(creator, **fields) -> str:
    body = {"amount": "80.00", "currency": "USD", "description": "Sparkle Time Fedora", **fields}
    response = client_for(creator).post("/api/v1/escrows", body, format="json")
    assert response.status_code == 202, response.content
    settle()
    return response.json()["escrow_id"]


def test_a_seller_proposal_asks_the_buyer_to_accept(buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    link_discord(seller, SELLER_DISCORD_ID)

    escrow_id = _propose(seller, role="seller", counterparty=buyer.username)

    (to_buyer,) = [dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID) if "deal" in dm]
    assert "A seller proposes a deal for 80.00 USD" in to_buyer and "accept it or decline it" in to_buyer
    assert f"/api/v1/escrows/{escrow_id}" in to_buyer
    (to_seller,) = [dm for dm in fake_discord.dms_to(SELLER_DISCORD_ID) if "Deal for" in dm]
    assert "wait for the buyer to accept" in to_seller
    assert "pay" not in to_buyer.lower().split("http")[0]  # nobody is asked to pay yet
    # the proposal carries the counterparty's two buttons; the creator's, only Cancel
    (proposal,) = [dm for dm in fake_discord.sent if "proposes a deal" in dm.content]
    assert _buttons(proposal) == [f"escrow:accept:{escrow_id}", f"escrow:decline:{escrow_id}"]
    (created,) = [dm for dm in fake_discord.sent if "Deal for" in dm.content]
    assert _buttons(created) == [f"escrow:cancel:{escrow_id}"]

    assert act(client_for(buyer), escrow_id, "accept").status_code == 202
    settle()
    accepted = Notification.objects.filter(escrow_id=escrow_id, kind="escrow_accepted")
    assert {n.user_id for n in accepted} == {buyer.pk, seller.pk}
    (to_pay,) = [dm for dm in fake_discord.sent if "pay it before the funding deadline" in dm.content]
    assert to_pay.recipient_id == BUYER_DISCORD_ID
    pay_button = to_pay.components[0]["components"][0]
    assert pay_button["label"] == "Pay" and "/checkout/" in pay_button["url"]


def test_the_creator_learns_of_a_decline(buyer, seller, fake_discord, link_discord):
    link_discord(buyer, BUYER_DISCORD_ID)
    escrow_id = _propose(buyer, counterparty=seller.username)

    assert act(client_for(seller), escrow_id, "decline", {"reason": "sold already"}).status_code == 202
    settle()

    declined = Notification.objects.get(escrow_id=escrow_id, user_id=buyer.pk, kind="escrow_declined")
    assert declined.status == Notification.Status.SENT
    assert any("declined" in dm for dm in fake_discord.dms_to(BUYER_DISCORD_ID))
    assert not Notification.objects.filter(escrow_id=escrow_id, kind="escrow_accepted").exists()


def test_the_new_kinds_can_be_switched_off(api_client, buyer):
    prefs = {p["kind"]: p for p in api_client(buyer).get("/api/v1/me/notification-preferences").json()["preferences"]}
    assert prefs["escrow_accepted"]["locked"] is False and prefs["escrow_declined"]["locked"] is False
