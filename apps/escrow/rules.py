"""The escrow's rules, with no database: its states, who may send which command in which state, which
actions to offer a person, the fee, and what a settled escrow still holds.

Everything here reads plain attributes (`state`, `buyer_id`, `seller_id`, `creator_role`, the money
columns), so it answers the same for the escrow row, the projections' view of it, or a test's stand-in.
The commands (`commands`, `ops`) enforce these rules; `actions.allowed_actions` offers what they allow.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any, Protocol

from apps.escrow.errors import EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed
from proto.common.v1 import Actor, ActorKind


class EscrowState(StrEnum):
    AWAIT_ACCEPTANCE = "AWAIT_ACCEPTANCE"
    AWAIT_FUNDS = "AWAIT_FUNDS"
    FUNDS_HELD = "FUNDS_HELD"
    DELIVERED = "DELIVERED"
    RELEASING = "RELEASING"
    RELEASED = "RELEASED"
    CANCELLED = "CANCELLED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"
    DISPUTED = "DISPUTED"


S = EscrowState

TERMINAL_STATES = frozenset({S.RELEASED, S.CANCELLED, S.REFUNDED})

BUYER, SELLER, STAFF, TIMER, SYSTEM = "buyer", "seller", "staff", "timer", "system"
# A party is also the deal's creator or its counterparty (the one who accepts or declines).
CREATOR, COUNTERPARTY = "creator", "counterparty"

# Ops holds (docs/architecture.md): wherever a decision or a money movement is still ahead; a settled escrow
# has nothing left to freeze.
HOLDABLE = (S.AWAIT_ACCEPTANCE, S.AWAIT_FUNDS, S.FUNDS_HELD, S.DELIVERED, S.DISPUTED, S.RELEASING, S.REFUNDING)

# Who may send which command in which state (DESIGN.md, "Escrow state machine").
RULES: dict[str, dict[str, frozenset[str]]] = {
    "AcceptEscrow": {S.AWAIT_ACCEPTANCE: frozenset({COUNTERPARTY})},
    "DeclineEscrow": {S.AWAIT_ACCEPTANCE: frozenset({COUNTERPARTY})},
    "MarkDelivered": {S.FUNDS_HELD: frozenset({SELLER})},
    "ReleaseFunds": {S.DELIVERED: frozenset({BUYER, STAFF, TIMER})},
    "CancelEscrow": {
        # Before acceptance the counterparty declines instead (DeclineEscrow says who walked away).
        S.AWAIT_ACCEPTANCE: frozenset({CREATOR, STAFF, TIMER}),
        S.AWAIT_FUNDS: frozenset({BUYER, SELLER, STAFF, TIMER}),
        S.FUNDS_HELD: frozenset({SELLER, STAFF}),
    },
    "OpenDispute": {
        S.FUNDS_HELD: frozenset({BUYER, SELLER}),
        S.DELIVERED: frozenset({BUYER, SELLER}),
    },
    "ResolveDispute": {S.DISPUTED: frozenset({STAFF})},
    "HoldEscrow": {state: frozenset({STAFF}) for state in HOLDABLE},
    "UnholdEscrow": {state: frozenset({STAFF}) for state in HOLDABLE},
    # A stranded-funds refund can fail in a settled state too, so retries are allowed there.
    "RetryPayout": {
        state: frozenset({STAFF}) for state in (S.RELEASING, S.REFUNDING, S.RELEASED, S.CANCELLED, S.REFUNDED)
    },
    "ReturnStrandedFunds": {state: frozenset({STAFF}) for state in (S.RELEASED, S.CANCELLED, S.REFUNDED)},
    # Ending a compliance hold after review: staff only, in any state that can still hold money.
    "ResolveComplianceHold": {
        state: frozenset({STAFF})
        for state in (S.AWAIT_FUNDS, S.FUNDS_HELD, S.DELIVERED, S.RELEASING, S.REFUNDING, S.DISPUTED)
    },
}

# A screening block (EscrowComplianceHold) marks the escrow with this attention. While it is set no command
# may move or give up the money (a cancel would let tainted USDC stay in custody unaccounted for), and the
# timers skip the escrow; only ResolveComplianceHold ends it.
COMPLIANCE_HOLD = "compliance_hold"
BLOCKED_BY_COMPLIANCE_HOLD = frozenset({"ReleaseFunds", "CancelEscrow", "ResolveDispute"})

# Action name -> the command it sends. "pay" is not an escrow command: the buyer pays through payments.
ACTION_COMMANDS: dict[str, str] = {
    "accept": "AcceptEscrow",
    "decline": "DeclineEscrow",
    "deliver": "MarkDelivered",
    "release": "ReleaseFunds",
    "dispute": "OpenDispute",
    "cancel": "CancelEscrow",
}
ACTIONS: tuple[str, ...] = ("accept", "decline", "pay", "deliver", "release", "dispute", "cancel")


class Deal(Protocol):
    """What the rules read of an escrow."""

    state: str
    buyer_id: int
    seller_id: int
    creator_role: str
    on_hold_since: datetime.datetime | None
    attention: str


def role_of(escrow: Deal, actor: Actor | None) -> str:
    """The actor's role on this escrow; a stranger gets `EscrowNotFound` (no existence leak)."""
    if actor is None or actor.kind == ActorKind.UNSPECIFIED:
        raise InvalidCommand("the command has no actor", field="actor")
    if actor.kind == ActorKind.STAFF:
        return STAFF
    if actor.kind == ActorKind.TIMER:
        return TIMER
    if actor.kind == ActorKind.SYSTEM:
        return SYSTEM
    if actor.user_id == escrow.buyer_id:
        return BUYER
    if actor.user_id == escrow.seller_id:
        return SELLER
    # A stranger learns nothing about someone else's escrow, not even that it exists.
    raise EscrowNotFound("no such escrow")


def party_roles(escrow: Deal, role: str) -> frozenset[str]:
    """A party's role (buyer / seller) and its side of the deal (creator / counterparty)."""
    if role == BUYER:
        return frozenset({BUYER, CREATOR if escrow.creator_role == BUYER else COUNTERPARTY})
    if role == SELLER:
        return frozenset({SELLER, CREATOR if escrow.creator_role == SELLER else COUNTERPARTY})
    return frozenset({role})


def command_check(escrow: Deal, command: str, role: str) -> None:
    """Raises the domain error that refuses `command` from `role` now, in the order the REST contract
    answers them: a role that can never send it (403), a state it is not allowed in (409), a role not
    allowed in this state (403), then an ops hold and a compliance hold (409)."""
    rules = RULES[command]
    roles = party_roles(escrow, role)
    if not roles & frozenset().union(*rules.values()):
        raise NotAllowed(f"the {_describe(roles)} cannot send {command}", state=escrow.state)
    if escrow.state not in rules:
        raise InvalidTransition(f"{command} is not allowed in state {escrow.state}", state=escrow.state)
    if not roles & rules[escrow.state]:
        allowed = ", ".join(sorted(rules[escrow.state]))
        raise NotAllowed(f"in state {escrow.state} only the {allowed} can send {command}", state=escrow.state)
    if escrow.on_hold_since is not None and command != "UnholdEscrow":
        # Frozen for an investigation: nothing moves (no release, refund, retry, timer) until ops lift it.
        raise InvalidTransition(f"the escrow is on hold; {command} waits until the hold is lifted", state=escrow.state)
    if escrow.attention == COMPLIANCE_HOLD and command in BLOCKED_BY_COMPLIANCE_HOLD:
        raise InvalidTransition(f"{command} is not allowed while the escrow is on compliance hold", state=escrow.state)


def _describe(roles: frozenset[str]) -> str:
    # "the buyer (creator)" reads better than a set.
    main = next((r for r in (BUYER, SELLER) if r in roles), None)
    side = next((r for r in (CREATOR, COUNTERPARTY) if r in roles), None)
    if main and side:
        return f"{main} ({'who created the deal' if side == CREATOR else 'counterparty'})"
    return next(iter(roles))


def actions_for(escrow: Any, user_id: int | None, *, staff: bool = False) -> list[str]:
    """The actions `user_id` may take on `escrow` now, in the order of `ACTIONS` (see
    `apps.escrow.actions.allowed_actions`). `escrow` is anything with `state`, `buyer_id`, `seller_id` and
    `created_by_id`; `on_hold_since` and `attention` are honoured when present."""
    roles = _user_roles(escrow, user_id, staff=staff)
    if not roles or getattr(escrow, "on_hold_since", None) is not None:
        return []
    state = str(escrow.state)
    compliance_hold = getattr(escrow, "attention", "") == COMPLIANCE_HOLD
    allowed = []
    for action in ACTIONS:
        if action == "pay":
            if BUYER in roles and state == S.AWAIT_FUNDS and not compliance_hold:
                allowed.append(action)
            continue
        command = ACTION_COMMANDS[action]
        if compliance_hold and command in BLOCKED_BY_COMPLIANCE_HOLD:
            continue
        if roles & RULES[command].get(state, frozenset()):
            allowed.append(action)
    return allowed


def _user_roles(escrow: Any, user_id: int | None, *, staff: bool) -> frozenset[str]:
    if user_id is None:
        return frozenset()
    created_by = getattr(escrow, "created_by_id", None) or escrow.buyer_id
    side = CREATOR if user_id == created_by else COUNTERPARTY
    if user_id == escrow.buyer_id:
        return frozenset({BUYER, side})
    if user_id == escrow.seller_id:
        return frozenset({SELLER, side})
    return frozenset({STAFF}) if staff else frozenset()


def fee_for(gross_minor: int, fee_bps: int) -> int:
    """The platform fee on a seller's gross share, rounded down to the minor unit."""
    return gross_minor * fee_bps // 10_000


def settled_state(*, paid_out_minor: int) -> EscrowState:
    """Where a release or refund ends once nothing is pending: released if the seller got anything."""
    return S.RELEASED if paid_out_minor else S.REFUNDED


def stranded_minor(escrow: Any) -> int:
    """Money a settled escrow holds that nobody has asked payments to move: it owes nothing any more."""
    if escrow.state not in TERMINAL_STATES:
        return 0
    return int(escrow.held_minor - escrow.pending_payout_minor - escrow.pending_refund_minor)


def lapsed(deadline: datetime.datetime | None, *, now: datetime.datetime) -> bool:
    return deadline is not None and deadline <= now
