"""Every lifecycle path of the state machine, driven only through the REST API: each ends in the right
state, with a complete audit timeline (oldest first) and the right money."""

from __future__ import annotations

from typing import Any

import pytest

from apps.escrow.models import Escrow
from apps.outbox.models import DeadLetter
from tests.gateway.support import create_settled, event_types, settle, timeline
from tests.helpers import act, pay, state_of

# 149.99 at the default 250 bps: fee = 14999 * 250 // 10000 = 374 minor units.
AMOUNT, SELLER_NET, FEE = "149.99", "146.25", "3.74"


def money_of(client: Any, escrow_id: str) -> dict[str, str]:
    settle()
    body = client.get(f"/api/v1/escrows/{escrow_id}").json()
    return {key: body[key] for key in ("state", "amount", "paid_to_seller", "refunded", "fee")}


def assert_balanced(escrow_id: str) -> None:
    """The invariant: received = paid to seller + refunded + fee + still held, nothing pending."""
    escrow = Escrow.objects.get(pk=escrow_id)
    assert escrow.received_minor == escrow.paid_out_minor + escrow.refunded_minor + escrow.fee_minor + escrow.held_minor
    assert escrow.held_minor == 0
    assert escrow.pending_payout_minor == escrow.pending_refund_minor == 0


def assert_timeline_is_ordered(client: Any, escrow_id: str) -> None:
    entries = timeline(client, escrow_id)
    assert [entry["version"] for entry in entries] == list(range(1, len(entries) + 1))
    stamps = [entry["occurred_at"] for entry in entries]
    assert stamps == sorted(stamps)


@pytest.fixture
def funded(api_client, buyer, seller) -> str:
    """An escrow of 149.99 the buyer has paid for (FUNDS_HELD)."""
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller, amount=AMOUNT)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    assert state_of(as_buyer, escrow_id) == "FUNDS_HELD"
    return escrow_id


def test_release_pays_the_seller_net_of_the_fee(api_client, buyer, seller, funded):
    as_buyer, as_seller = api_client(buyer), api_client(seller)

    delivered = act(as_seller, funded, "deliver")
    released = act(as_buyer, funded, "release")

    assert delivered.status_code == 202 and delivered.json()["state"] == "DELIVERED"
    assert released.status_code == 202 and released["Location"] == f"/api/v1/escrows/{funded}"
    assert money_of(as_buyer, funded) == {
        "state": "RELEASED",
        "amount": AMOUNT,
        "paid_to_seller": SELLER_NET,
        "refunded": "0.00",
        "fee": FEE,
    }
    assert event_types(as_seller, funded) == [
        "EscrowCreated",
        "EscrowAccepted",
        "EscrowFundsHeld",
        "EscrowDelivered",
        "EscrowReleaseRequested",
        "EscrowReleased",
    ]
    assert_timeline_is_ordered(as_buyer, funded)
    assert_balanced(funded)
    assert not DeadLetter.objects.exists()


@pytest.mark.parametrize("who", ["buyer", "seller", "staff"])
def test_cancel_before_funding(api_client, buyer, seller, staff, who):
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    canceller = api_client({"buyer": buyer, "seller": seller, "staff": staff}[who])

    response = act(canceller, escrow_id, "cancel", {"reason": "changed my mind"})

    assert response.status_code == 202 and response.json()["state"] == "CANCELLED"
    assert money_of(as_buyer, escrow_id) == {
        "state": "CANCELLED",
        "amount": AMOUNT,
        "paid_to_seller": "0.00",
        "refunded": "0.00",
        "fee": "0.00",
    }
    entries = timeline(as_buyer, escrow_id)
    assert [e["type"] for e in entries] == ["EscrowCreated", "EscrowAccepted", "EscrowCancelled"]
    assert entries[-1]["actor"]["kind"] == ("staff" if who == "staff" else "user")
    assert entries[-1]["data"]["reason"] == "changed my mind"
    assert_balanced(escrow_id)


def test_seller_cancels_after_funding_and_the_buyer_is_refunded(api_client, buyer, seller, funded):
    as_buyer, as_seller = api_client(buyer), api_client(seller)

    response = act(as_seller, funded, "cancel")

    assert response.status_code == 202 and response.json()["state"] == "REFUNDING"
    assert money_of(as_buyer, funded) == {
        "state": "REFUNDED",
        "amount": AMOUNT,
        "paid_to_seller": "0.00",
        "refunded": AMOUNT,
        "fee": "0.00",
    }
    assert event_types(as_buyer, funded) == [
        "EscrowCreated",
        "EscrowAccepted",
        "EscrowFundsHeld",
        "EscrowRefundRequested",
        "EscrowCancelled",
        "EscrowRefunded",
    ]
    assert_timeline_is_ordered(as_buyer, funded)
    assert_balanced(funded)


@pytest.mark.parametrize("who", ["buyer", "seller"])
@pytest.mark.parametrize("after_delivery", [False, True])
def test_either_party_can_open_a_dispute(api_client, buyer, seller, funded, who, after_delivery):
    as_seller = api_client(seller)
    if after_delivery:
        assert act(as_seller, funded, "deliver").status_code == 202
    disputer = api_client(buyer if who == "buyer" else seller)

    response = act(disputer, funded, "dispute", {"reason": "item never arrived"})

    assert response.status_code == 202 and response.json()["state"] == "DISPUTED"
    entries = timeline(as_seller, funded)
    assert entries[-1]["type"] == "EscrowDisputed"
    assert entries[-1]["data"]["reason"] == "item never arrived"
    assert entries[-1]["actor"]["user_id"] == (buyer if who == "buyer" else seller).pk
    settle()
    # A dispute stops the clock: nobody can release or deliver until staff resolve it.
    escrow = Escrow.objects.get(pk=funded)
    assert escrow.held_minor == 14999 and escrow.state == "DISPUTED"


@pytest.mark.parametrize(
    ("body", "final", "paid", "refunded", "fee", "tail"),
    [
        (
            {"outcome": "release"},
            "RELEASED",
            SELLER_NET,
            "0.00",
            FEE,
            ["EscrowDisputeResolved", "EscrowReleaseRequested", "EscrowReleased"],
        ),
        (
            {"outcome": "refund"},
            "REFUNDED",
            "0.00",
            AMOUNT,
            "0.00",
            ["EscrowDisputeResolved", "EscrowRefundRequested", "EscrowRefunded"],
        ),
        # Split: the seller's gross share is 100.00, the fee is taken from it (2.50); the rest goes back.
        (
            {"outcome": "split", "seller_amount": "100.00", "note": "half delivered"},
            "RELEASED",
            "97.50",
            "49.99",
            "2.50",
            [
                "EscrowDisputeResolved",
                "EscrowReleaseRequested",
                "EscrowRefundRequested",
                "EscrowReleased",
                "EscrowRefunded",
            ],
        ),
    ],
    ids=["release", "refund", "split"],
)
def test_staff_resolve_a_dispute(api_client, buyer, seller, staff, funded, body, final, paid, refunded, fee, tail):
    as_buyer, as_staff = api_client(buyer), api_client(staff)
    assert act(as_buyer, funded, "dispute", {"reason": "wrong item"}).status_code == 202

    response = act(as_staff, funded, "resolve", body)

    assert response.status_code == 202, response.content
    assert money_of(as_buyer, funded) == {
        "state": final,
        "amount": AMOUNT,
        "paid_to_seller": paid,
        "refunded": refunded,
        "fee": fee,
    }
    assert event_types(as_staff, funded) == [
        "EscrowCreated",
        "EscrowAccepted",
        "EscrowFundsHeld",
        "EscrowDisputed",
        *tail,
    ]
    resolved = next(e for e in timeline(as_buyer, funded) if e["type"] == "EscrowDisputeResolved")
    assert resolved["actor"] == {"kind": "staff", "user_id": staff.pk}
    assert_timeline_is_ordered(as_buyer, funded)
    assert_balanced(funded)


def test_the_buyer_sees_payment_instructions_and_the_seller_does_not(api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    settle()

    for_buyer = as_buyer.get(f"/api/v1/escrows/{escrow_id}").json()
    for_seller = as_seller.get(f"/api/v1/escrows/{escrow_id}").json()

    assert for_buyer["payment"]["provider"] == "sandbox"
    assert for_buyer["payment"]["client_secret"]
    assert "payment" not in for_seller
    assert for_seller["buyer"] == buyer.pk and for_seller["seller"] == seller.pk
    # Each party is offered only what they may do now: the buyer pays, either side may still cancel.
    assert (for_buyer["actions"], for_seller["actions"]) == (["pay", "cancel"], ["cancel"])
    assert {k: v for k, v in for_buyer.items() if k not in ("payment", "actions")} == {
        k: v for k, v in for_seller.items() if k != "actions"
    }


def test_list_filters_by_role_and_state_and_pages(api_client, buyer, seller):
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    # Given: the buyer buys five times from the seller and sells twice to them; one purchase is paid.
    bought = [create_settled(as_buyer, seller=seller, description=f"item {n}")["escrow_id"] for n in range(5)]
    sold = [create_settled(as_seller, seller=buyer, description=f"sold {n}")["escrow_id"] for n in range(2)]
    assert pay(as_buyer, bought[0]).status_code == 202
    settle()

    def ids(query: str) -> tuple[set[str], dict[str, Any]]:
        response = as_buyer.get(f"/api/v1/escrows{query}")
        assert response.status_code == 200, response.content
        body = response.json()
        return {item["id"] for item in body["results"]}, body

    everything, body = ids("")
    assert everything == set(bought) | set(sold) and body["count"] == 7 and body["next"] is None
    assert ids("?role=buyer")[0] == set(bought)
    assert ids("?role=seller")[0] == set(sold)
    assert ids("?state=FUNDS_HELD")[0] == {bought[0]}
    assert ids("?role=seller&state=FUNDS_HELD")[0] == set()

    # Pages of 3 walk every escrow exactly once, following `next`.
    seen: list[str] = []
    url: str | None = "/api/v1/escrows?role=buyer&limit=3"
    while url:
        page = as_buyer.get(url).json()
        assert page["count"] == 5
        seen.extend(item["id"] for item in page["results"])
        url = page["next"]
    assert sorted(seen) == sorted(bought)
    first, _ = ids("?limit=2&offset=0")
    second, _ = ids("?limit=2&offset=2")
    assert len(first) == len(second) == 2 and not first & second
