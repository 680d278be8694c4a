"""The kinds of message the notifications service sends, and which of them a user may switch off.

Money-moving and security messages are locked on: a user must always learn that money was taken,
held, paid out or refunded, that a clock which ends in money moving has started, and that their
Discord account was linked."""

from __future__ import annotations

KINDS: dict[str, str] = {
    "escrow_created": "A deal you are party to was proposed (the other party accepts or declines it)",
    "escrow_accepted": "A deal was accepted (the funding deadline starts)",
    "escrow_declined": "A deal was declined",
    "funds_held": "The buyer's payment is held in escrow",
    "delivered": "The seller marked the item delivered (the inspection period starts)",
    "released": "The funds were paid to the seller",
    "cancelled": "The escrow was cancelled before it was funded",
    "refunded": "The buyer was refunded",
    "disputed": "A dispute was opened",
    "dispute_resolved": "A dispute was resolved and money moves",
    "account_linked": "A Discord account was linked to your account",
    "payout_waiting": "Your payout waits for you to add where to be paid",
    "reminder_acceptance": "A reminder to accept or decline a deal before it lapses",
    "reminder_funding": "A reminder to pay before the funding deadline",
    "reminder_inspection": "A reminder to release or dispute before the inspection period ends",
}

LOCKED_ON: frozenset[str] = frozenset(
    {"funds_held", "delivered", "released", "refunded", "dispute_resolved", "account_linked", "payout_waiting"}
)
