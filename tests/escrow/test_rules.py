"""`apps.escrow.rules` alone, with no database: an escrow here is a plain stand-in with the attributes the
rules read. The same table through `dispatch` on the real database is `test_state_machine.py`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest

from apps.escrow import rules
from apps.escrow.errors import EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed
from apps.escrow.rules import EscrowState as S
from proto.common.v1 import Actor, ActorKind

BUYER_ID, SELLER_ID, STRANGER_ID = 1, 2, 3


@dataclass
class Deal:
    state: str
    creator_role: str = "buyer"
    buyer_id: int = BUYER_ID
    seller_id: int = SELLER_ID
    on_hold_since: datetime.datetime | None = None
    attention: str = ""
    held_minor: int = 0
    pending_payout_minor: int = 0
    pending_refund_minor: int = 0

    @property
    def created_by_id(self) -> int:
        return self.buyer_id if self.creator_role == "buyer" else self.seller_id


def user(user_id: int) -> Actor:
    return Actor(kind=ActorKind.USER, user_id=user_id)


def test_roles_follow_the_actor_and_a_stranger_learns_nothing() -> None:
    deal = Deal(S.FUNDS_HELD)
    assert rules.role_of(deal, user(BUYER_ID)) == rules.BUYER
    assert rules.role_of(deal, user(SELLER_ID)) == rules.SELLER
    assert rules.role_of(deal, Actor(kind=ActorKind.STAFF, user_id=STRANGER_ID)) == rules.STAFF
    assert rules.role_of(deal, Actor(kind=ActorKind.TIMER)) == rules.TIMER
    with pytest.raises(EscrowNotFound):
        rules.role_of(deal, user(STRANGER_ID))
    with pytest.raises(InvalidCommand):
        rules.role_of(deal, None)


@pytest.mark.parametrize(
    ("creator_role", "buyer_side", "seller_side"),
    [("buyer", rules.CREATOR, rules.COUNTERPARTY), ("seller", rules.COUNTERPARTY, rules.CREATOR)],
)
def test_each_party_is_creator_or_counterparty(creator_role: str, buyer_side: str, seller_side: str) -> None:
    deal = Deal(S.AWAIT_ACCEPTANCE, creator_role=creator_role)
    assert rules.party_roles(deal, rules.BUYER) == {rules.BUYER, buyer_side}
    assert rules.party_roles(deal, rules.SELLER) == {rules.SELLER, seller_side}
    assert rules.party_roles(deal, rules.STAFF) == {rules.STAFF}


def test_only_the_counterparty_accepts() -> None:
    deal = Deal(S.AWAIT_ACCEPTANCE)
    rules.command_check(deal, "AcceptEscrow", rules.SELLER)
    with pytest.raises(NotAllowed):
        rules.command_check(deal, "AcceptEscrow", rules.BUYER)
    with pytest.raises(NotAllowed):
        rules.command_check(deal, "AcceptEscrow", rules.STAFF)


def test_a_role_that_never_sends_the_command_is_refused_before_the_state_is_looked_at() -> None:
    with pytest.raises(NotAllowed):
        rules.command_check(Deal(S.RELEASED), "MarkDelivered", rules.BUYER)
    with pytest.raises(InvalidTransition):
        rules.command_check(Deal(S.RELEASED), "MarkDelivered", rules.SELLER)


def test_a_role_allowed_elsewhere_but_not_in_this_state_is_not_allowed() -> None:
    with pytest.raises(NotAllowed) as refused:
        rules.command_check(Deal(S.FUNDS_HELD), "CancelEscrow", rules.BUYER)
    assert refused.value.state == S.FUNDS_HELD


def test_an_ops_hold_stops_every_command_but_unhold() -> None:
    held = Deal(S.DELIVERED, on_hold_since=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    with pytest.raises(InvalidTransition):
        rules.command_check(held, "ReleaseFunds", rules.BUYER)
    rules.command_check(held, "UnholdEscrow", rules.STAFF)


def test_a_compliance_hold_stops_what_would_move_or_give_up_the_money() -> None:
    blocked = Deal(S.DELIVERED, attention=rules.COMPLIANCE_HOLD)
    with pytest.raises(InvalidTransition):
        rules.command_check(blocked, "ReleaseFunds", rules.BUYER)
    rules.command_check(blocked, "OpenDispute", rules.SELLER)


def test_settled_states_cannot_be_held() -> None:
    for state in rules.TERMINAL_STATES:
        with pytest.raises(InvalidTransition):
            rules.command_check(Deal(state), "HoldEscrow", rules.STAFF)
    for state in rules.HOLDABLE:
        rules.command_check(Deal(state), "HoldEscrow", rules.STAFF)


def test_actions_offered_follow_the_rules() -> None:
    assert rules.actions_for(Deal(S.AWAIT_ACCEPTANCE), SELLER_ID) == ["accept", "decline"]
    assert rules.actions_for(Deal(S.AWAIT_ACCEPTANCE), BUYER_ID) == ["cancel"]
    assert rules.actions_for(Deal(S.AWAIT_FUNDS), BUYER_ID) == ["pay", "cancel"]
    assert rules.actions_for(Deal(S.DELIVERED), STRANGER_ID, staff=True) == ["release"]
    assert rules.actions_for(Deal(S.DELIVERED), STRANGER_ID) == []
    assert rules.actions_for(Deal(S.DELIVERED, attention=rules.COMPLIANCE_HOLD), BUYER_ID) == ["dispute"]
    assert rules.actions_for(Deal(S.AWAIT_FUNDS, attention=rules.COMPLIANCE_HOLD), BUYER_ID) == []
    on_hold = Deal(S.DELIVERED, on_hold_since=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    assert rules.actions_for(on_hold, BUYER_ID) == []
    assert rules.actions_for(Deal(S.AWAIT_FUNDS), None) == []


def test_the_fee_is_rounded_down() -> None:
    assert rules.fee_for(14_999, 250) == 374
    assert rules.fee_for(0, 250) == 0


def test_a_release_settles_released_only_if_the_seller_got_something() -> None:
    assert rules.settled_state(paid_out_minor=1) == S.RELEASED
    assert rules.settled_state(paid_out_minor=0) == S.REFUNDED


def test_only_a_settled_escrow_has_stranded_money() -> None:
    late = Deal(S.RELEASED, held_minor=500, pending_refund_minor=200)
    assert rules.stranded_minor(late) == 300
    assert rules.stranded_minor(Deal(S.FUNDS_HELD, held_minor=500)) == 0


def test_a_deadline_lapses_when_it_is_reached() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert rules.lapsed(now, now=now)
    assert not rules.lapsed(now + datetime.timedelta(seconds=1), now=now)
    assert not rules.lapsed(None, now=now)
