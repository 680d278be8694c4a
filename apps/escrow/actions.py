"""Which actions a user may take on an escrow now: the one answer the web app's deal page, the Discord
buttons and the REST API's `actions` field all show, read from the same rules the commands enforce
(`rules.actions_for`)."""

from __future__ import annotations

import uuid
from typing import Any

from apps.escrow.models import Escrow
from apps.escrow.rules import actions_for


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
    return actions_for(escrow, user_id, staff=staff)
