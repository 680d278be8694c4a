"""The happy path through the public API: create, accept, pay (sandbox), deliver, release -> RELEASED."""

from __future__ import annotations

from apps.escrow.models import Escrow
from tests.helpers import act, create_escrow, pay, state_of


def test_buyer_pays_seller_delivers_buyer_releases(api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)

    created = create_escrow(as_buyer, seller=seller, amount="149.99", accept=False)
    escrow_id = created["escrow_id"]
    assert created["state"] == "AWAIT_ACCEPTANCE"
    # nobody is asked to pay before the seller agreed to the terms
    assert "payment" not in as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()
    assert as_seller.get(f"/api/v1/escrows/{escrow_id}").json()["actions"] == ["accept", "decline"]
    accepted = act(as_seller, escrow_id, "accept")
    assert accepted.status_code == 202 and accepted.json()["state"] == "AWAIT_FUNDS"
    assert as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()["actions"] == ["pay", "cancel"]

    assert pay(as_buyer, escrow_id).status_code == 202
    assert state_of(as_buyer, escrow_id) == "FUNDS_HELD"
    assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert act(as_buyer, escrow_id, "release").status_code == 202
    assert state_of(as_buyer, escrow_id) == "RELEASED"

    timeline = as_buyer.get(f"/api/v1/escrows/{escrow_id}/events").json()
    assert [e["type"] for e in timeline] == [
        "EscrowCreated",
        "EscrowAccepted",
        "EscrowFundsHeld",
        "EscrowDelivered",
        "EscrowReleaseRequested",
        "EscrowReleased",
    ]
    escrow = Escrow.objects.get(pk=escrow_id)
    assert escrow.received_minor == 14999
    assert escrow.paid_out_minor + escrow.fee_minor == 14999
    assert escrow.held_minor == 0
