"""Which actions a user may take on an escrow now: the one answer the web app's deal page, the Discord
buttons and the REST API's `actions` field all show, read from the same rules `services` enforces."""

from __future__ import annotations

import uuid
from typing import Any

from apps.escrow.models import Escrow
from apps.escrow.services import (
    BLOCKED_BY_COMPLIANCE_HOLD,
    BUYER,
    COMPLIANCE_HOLD,
    COUNTERPARTY,
    CREATOR,
    RULES,
    SELLER,
    STAFF,
)

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


def allowed_actions(escrow: Any, user_id: int | None, *, staff: bool = False) -> list[str]:
    """The actions `user_id` may take on `escrow` in its current state, in the order of `ACTIONS`.

    `escrow` is an escrow id (str or UUID) or anything with `state`, `buyer_id`, `seller_id` and
    `created_by_id` (the projections' escrow view, or the escrow itself); `on_hold_since` and `attention`
    are honoured when present. `staff` says whether the user is staff (the caller knows how it decides
    that); staff act as staff only on escrows they are not party to, as the gateway does. A user who is
    neither party nor staff gets `[]`, like an unknown id. A listed action can still be refused if the
    escrow changes before the command arrives: this is a hint for what to show, `dispatch` decides."""
    if isinstance(escrow, str | uuid.UUID):
        try:
            escrow = Escrow.objects.filter(pk=uuid.UUID(str(escrow))).first()
        except ValueError:
            return []
        if escrow is None:
            return []
    roles = _roles(escrow, user_id, staff=staff)
    if not roles or getattr(escrow, "on_hold_since", None) is not None:
        return []
    state = str(escrow.state)
    compliance_hold = getattr(escrow, "attention", "") == COMPLIANCE_HOLD
    allowed = []
    for action in ACTIONS:
        if action == "pay":
            if BUYER in roles and state == "AWAIT_FUNDS" and not compliance_hold:
                allowed.append(action)
            continue
        command = ACTION_COMMANDS[action]
        if compliance_hold and command in BLOCKED_BY_COMPLIANCE_HOLD:
            continue
        if roles & RULES[command].get(state, frozenset()):
            allowed.append(action)
    return allowed


def _roles(escrow: Any, user_id: int | None, *, staff: bool) -> frozenset[str]:
    if user_id is None:
        return frozenset()
    created_by = getattr(escrow, "created_by_id", None) or escrow.buyer_id
    side = CREATOR if user_id == created_by else COUNTERPARTY
    if user_id == escrow.buyer_id:
        return frozenset({BUYER, side})
    if user_id == escrow.seller_id:
        return frozenset({SELLER, side})
    return frozenset({STAFF}) if staff else frozenset()
