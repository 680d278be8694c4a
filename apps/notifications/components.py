"""Discord message components for a deal: a row of buttons for what one person may do now.

A button's `custom_id` is `escrow:<action>:<escrow_id>`; the Discord interactions endpoint parses it
back and re-checks identity and state on every click, so a forwarded or stale button changes nothing.
Pay is a link button (style 5) to the buyer's checkout page. DMs and interaction replies share this."""

from __future__ import annotations

import uuid
from typing import Any

ACTIONS = ("accept", "decline", "pay", "deliver", "release", "dispute", "cancel")
# Discord's button styles: 1 primary, 2 secondary, 3 success, 4 danger, 5 link.
_STYLE = {"accept": 3, "decline": 4, "deliver": 1, "release": 3, "dispute": 2, "cancel": 4}
_LABEL = {
    "accept": "Accept",
    "decline": "Decline",
    "pay": "Pay",
    "deliver": "Mark delivered",
    "release": "Release funds",
    "dispute": "Open a dispute",
    "cancel": "Cancel",
}
ACTION_ROW, BUTTON, LINK_STYLE = 1, 2, 5
_PREFIX = "escrow"


def custom_id(*, action: str, escrow_id: str | uuid.UUID) -> str:
    return f"{_PREFIX}:{action}:{escrow_id}"


def parse_custom_id(value: str) -> tuple[str, uuid.UUID] | None:
    """(action, escrow id) from a button's custom_id, or None if it is not one of ours."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 3 or parts[0] != _PREFIX or parts[1] not in ACTIONS or parts[1] == "pay":
        return None
    try:
        return parts[1], uuid.UUID(parts[2])
    except ValueError:
        return None


def deal_buttons(
    *, escrow_id: str | uuid.UUID, actions: list[str] | tuple[str, ...], checkout_url: str | None = None
) -> list[dict[str, Any]]:
    """One action row (at most five buttons), in the order of ACTIONS; empty when there is nothing to do.
    `pay` appears only with a checkout URL to link to."""
    buttons: list[dict[str, Any]] = []
    for action in ACTIONS:
        if action not in actions:
            continue
        if action == "pay":
            if checkout_url:
                buttons.append({"type": BUTTON, "style": LINK_STYLE, "label": _LABEL[action], "url": checkout_url})
            continue
        buttons.append(
            {
                "type": BUTTON,
                "style": _STYLE[action],
                "label": _LABEL[action],
                "custom_id": custom_id(action=action, escrow_id=escrow_id),
            }
        )
    return [{"type": ACTION_ROW, "components": buttons[:5]}] if buttons else []
