"""`apps.escrow.public.allowed_actions`: what each person may do now, written out here from DESIGN.md's
table, and checked against what `dispatch` then accepts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from apps.escrow import public as escrow
from apps.escrow.models import Escrow
from apps.projections.selectors import escrow_view_get
from proto.escrow import v1 as escrow_v1
from tests.escrow import given
from tests.factories import UserFactory
from tests.gateway.support import settle

# Buyer-created escrows: the seller is the counterparty.
EXPECTED: dict[str, dict[str, list[str]]] = {
    "AWAIT_ACCEPTANCE": {"buyer": ["cancel"], "seller": ["accept", "decline"], "staff": ["cancel"]},
    "AWAIT_FUNDS": {"buyer": ["pay", "cancel"], "seller": ["cancel"], "staff": ["cancel"]},
    "FUNDS_HELD": {"buyer": ["dispute"], "seller": ["deliver", "dispute", "cancel"], "staff": ["cancel"]},
    "DELIVERED": {"buyer": ["release", "dispute"], "seller": ["dispute"], "staff": ["release"]},
    "DISPUTED": {"buyer": [], "seller": [], "staff": []},
    "RELEASED": {"buyer": [], "seller": [], "staff": []},
    "CANCELLED": {"buyer": [], "seller": [], "staff": []},
}


@pytest.mark.parametrize("state", list(EXPECTED))
def test_each_party_is_offered_what_the_table_allows(state: str, buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in(state, buyer=buyer, seller=seller, staff=staff)
    settle()
    view = escrow_view_get(escrow_id=str(escrow_id))
    stranger = UserFactory(username="nosy")
    for role, expected in EXPECTED[state].items():
        user = {"buyer": buyer, "seller": seller, "staff": staff}[role]
        is_staff = role == "staff"
        # the same answer from an id, the escrow itself and the projections' read model
        assert escrow.allowed_actions(escrow_id, user.pk, staff=is_staff) == expected, (state, role)
        assert escrow.allowed_actions(str(escrow_id), user.pk, staff=is_staff) == expected
        assert escrow.allowed_actions(Escrow.objects.get(pk=escrow_id), user.pk, staff=is_staff) == expected
        assert escrow.allowed_actions(view, user.pk, staff=is_staff) == expected
    assert escrow.allowed_actions(escrow_id, stranger.pk) == []
    assert escrow.allowed_actions(uuid.uuid4(), buyer.pk) == []
    assert escrow.allowed_actions("not-an-id", buyer.pk) == []


def test_a_seller_created_deal_is_answered_by_the_buyer(buyer: Any, seller: Any) -> None:
    escrow_id = given.propose(buyer=buyer, seller=seller, creator=seller)
    assert escrow.allowed_actions(escrow_id, buyer.pk) == ["accept", "decline"]
    assert escrow.allowed_actions(escrow_id, seller.pk) == ["cancel"]


def test_nothing_is_offered_while_ops_hold_the_escrow(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("AWAIT_FUNDS", buyer=buyer, seller=seller, staff=staff)
    given.send(escrow_v1.HoldEscrow(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason="review"))
    assert escrow.allowed_actions(escrow_id, buyer.pk) == []
    assert escrow.allowed_actions(escrow_id, staff.pk, staff=True) == []


COMMAND_OF = {
    "accept": lambda e, a: escrow_v1.AcceptEscrow(escrow_id=e, actor=a),
    "decline": lambda e, a: escrow_v1.DeclineEscrow(escrow_id=e, actor=a),
    "deliver": lambda e, a: escrow_v1.MarkDelivered(escrow_id=e, actor=a),
    "release": lambda e, a: escrow_v1.ReleaseFunds(escrow_id=e, actor=a),
    "dispute": lambda e, a: escrow_v1.OpenDispute(escrow_id=e, actor=a, reason="not as described"),
    "cancel": lambda e, a: escrow_v1.CancelEscrow(escrow_id=e, actor=a, reason="changed my mind"),
}


@pytest.mark.parametrize("state", ["AWAIT_ACCEPTANCE", "FUNDS_HELD"])
def test_what_is_offered_is_what_dispatch_accepts(state: str, buyer: Any, seller: Any, staff: Any) -> None:
    """Every action offered is accepted by dispatch, and every one not offered is refused."""
    for role in ("buyer", "seller"):
        user = buyer if role == "buyer" else seller
        offered = escrow.allowed_actions(given.escrow_in(state, buyer=buyer, seller=seller, staff=staff), user.pk)
        for action, build in COMMAND_OF.items():
            escrow_id = given.escrow_in(state, buyer=buyer, seller=seller, staff=staff)
            command = build(str(escrow_id), given.user(user))
            if action in offered:
                assert not given.send(command).duplicate, (state, role, action)
            else:
                with pytest.raises(escrow.EscrowError):
                    given.send(command)
