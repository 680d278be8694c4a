"""What the web app shows about a deal: its state and timeline in words, its deadlines, and the actions
the signed-in person may take now. Reads come from the projections' selectors; nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.escrow.public import EscrowState as S

STATE_WORDS: dict[str, str] = {
    S.AWAIT_ACCEPTANCE: "Waiting for the other party to accept the terms",
    S.AWAIT_FUNDS: "Waiting for the buyer to pay",
    S.FUNDS_HELD: "Paid: the money is held; waiting for the seller to deliver",
    S.DELIVERED: "Delivered: the buyer is inspecting the item",
    S.RELEASING: "Released: paying the seller",
    S.RELEASED: "Completed: the seller has been paid",
    S.CANCELLED: "Cancelled",
    S.REFUNDING: "Refunding the buyer",
    S.REFUNDED: "Refunded to the buyer",
    S.DISPUTED: "In dispute: our team is reviewing it",
}

# Where each state sits for the "my deals" grouping.
OPEN_STATES = (S.AWAIT_ACCEPTANCE, S.AWAIT_FUNDS, S.FUNDS_HELD, S.DELIVERED, S.DISPUTED, S.RELEASING, S.REFUNDING)
CLOSED_STATES = (S.RELEASED, S.REFUNDED, S.CANCELLED)

_EVENT_WORDS = {
    "EscrowCreated": "{actor} opened the deal",
    "EscrowAccepted": "{actor} accepted the terms",
    "EscrowDeclined": "{actor} declined the deal",
    "EscrowFundsHeld": "The buyer's payment arrived; the money is held",
    "EscrowDelivered": "{actor} marked the item delivered; the inspection period started",
    "EscrowReleaseRequested": "{actor} released the money to the seller",
    "EscrowReleased": "The seller was paid",
    "EscrowCancelled": "{actor} cancelled the deal",
    "EscrowRefundRequested": "{actor} asked for the buyer to be refunded",
    "EscrowRefunded": "The buyer was refunded",
    "EscrowDisputed": "{actor} opened a dispute",
    "EscrowDisputeResolved": "Our team resolved the dispute",
    "EscrowComplianceHold": "The payment is held for a compliance review",
    "EscrowComplianceHoldResolved": "The compliance review ended",
    "EscrowNeedsAttention": "Our team was asked to look at this deal",
    "EscrowPutOnHold": "Our team put the deal on hold",
    "EscrowHoldLifted": "Our team lifted the hold",
    "EscrowPayoutRetried": "Our team retried a payout",
    "EscrowStrandedFundsReturnRequested": "Our team returned money that arrived late",
}


@dataclass(frozen=True)
class TimelineLine:
    at: Any
    type: str
    text: str


def _actor_words(entry: Any, names: dict[int, str], viewer_id: int) -> str:
    if entry.actor_kind in ("timer",):
        return "The deadline"
    if entry.actor_kind in ("staff",):
        return "Our team"
    if entry.actor_kind in ("system", "", None) or entry.actor_id is None:
        return "The system"
    if entry.actor_id == viewer_id:
        return "You"
    return names.get(entry.actor_id, "The other party")


def timeline_words(entries: Any, *, names: dict[int, str], viewer_id: int) -> list[TimelineLine]:
    lines = []
    for entry in entries:
        template = _EVENT_WORDS.get(entry.type)
        actor = _actor_words(entry, names, viewer_id)
        if template is None:
            text = entry.type.removeprefix("Escrow")
        else:
            text = template.format(actor=actor)
        if entry.type == "EscrowDisputeResolved":
            outcome = (entry.data or {}).get("outcome")
            if isinstance(outcome, str) and outcome:
                text += f" ({outcome.lower().replace('dispute_outcome_', '')})"
        lines.append(TimelineLine(at=entry.occurred_at, type=entry.type, text=text))
    return lines


def party_of(view: Any, user_id: int) -> str | None:
    if user_id == view.buyer_id:
        return "buyer"
    if user_id == view.seller_id:
        return "seller"
    return None
