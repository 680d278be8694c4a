"""Discord interactions, after their signature holds: who is asking (the Discord user id in the signed
interaction, an account made and linked on first use), what they asked, and the answer.

Slash commands: `/escrow create | list | status`. Buttons: `escrow:<action>:<escrow_id>`; every click
re-checks identity and state, so a forwarded or stale button gets an ephemeral refusal in words and
changes nothing. Dispute opens a modal whose submission carries the statement. Every mutation goes
through the escrow service's `dispatch` with a command id derived from the interaction id, so one
interaction delivered twice has one effect.

Answers are immediate (type 4, or 7 for a click, updating the message the button was on) when the read
model shows the result in time; otherwise the interaction is deferred (5, or 6 for a click) and the
bus worker's tick follows up through the interaction webhook (`followups.py`)."""

from __future__ import annotations

import datetime
import logging
import re
import uuid
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.core.public import amount_display
from apps.discord.models import FollowUp, InteractionReceipt
from apps.escrow import public as escrow
from apps.notifications import public as notifications
from apps.payments import public as payments
from apps.projections import public as projections
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1

S = escrow.EscrowState

log = logging.getLogger(__name__)

# Interaction types and response types (Discord's "Receiving and Responding" reference).
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 1, 2, 3, 5
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE, MODAL = 1, 4, 5, 6, 7, 9
EPHEMERAL = 1 << 6
SUB_COMMAND, STRING, USER = 1, 3, 6
TEXT_INPUT, PARAGRAPH = 4, 2

COMMAND_NAME = "escrow"
STATEMENT_FIELD = "statement"
_INTERACTION_NAMESPACE = uuid.UUID("0b5f6a52-93c4-4b8e-9a55-6c2f1d0e7a31")
_SNOWFLAKE = re.compile(r"^[0-9]{1,20}$")
_AMOUNT = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,2})?$")

# Words for the next step of each party, by state.
NEXT_STEP: dict[str, dict[str, str]] = {
    S.AWAIT_ACCEPTANCE: {
        "creator": "Waiting for the other party to accept the terms.",
        "counterparty": "Accept the terms to go ahead, or decline.",
    },
    S.AWAIT_FUNDS: {"buyer": "Pay before the funding deadline.", "seller": "Wait for the buyer's payment."},
    S.FUNDS_HELD: {
        "buyer": "Your money is held. Wait for the seller to deliver.",
        "seller": "The money is held. Deliver the item, then mark it delivered.",
    },
    S.DELIVERED: {
        "buyer": "Check the item, then release the funds or open a dispute.",
        "seller": "Wait for the buyer to release, or for the inspection period to end.",
    },
    S.RELEASING: {"buyer": "The payout to the seller is under way.", "seller": "Your payout is under way."},
    S.RELEASED: {"buyer": "Done: the seller was paid.", "seller": "Done: you were paid."},
    S.REFUNDING: {"buyer": "Your refund is under way.", "seller": "The buyer is being refunded."},
    S.REFUNDED: {"buyer": "Done: you were refunded.", "seller": "Done: the buyer was refunded."},
    S.CANCELLED: {"buyer": "Nothing more to do.", "seller": "Nothing more to do."},
    S.DISPUTED: {
        "buyer": "Our staff are reviewing the dispute; the money stays held.",
        "seller": "Our staff are reviewing the dispute; the money stays held.",
    },
}
_VERB = {
    "accept": "accept",
    "decline": "decline",
    "deliver": "mark delivered",
    "release": "release",
    "dispute": "open a dispute on",
    "cancel": "cancel",
}


class Malformed(Exception):
    """A signed body that is not an interaction we can read: 400."""


@dataclass(frozen=True)
class Interaction:
    id: int
    type: int
    application_id: str
    token: str
    discord_user_id: int
    username: str
    data: dict[str, Any]
    from_message: bool

    @property
    def command_id(self) -> uuid.UUID:
        return uuid.uuid5(_INTERACTION_NAMESPACE, f"interaction:{self.id}")


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    follow_up: tuple[uuid.UUID, int, str] | None = None  # escrow id, version to wait for, a note


# --- parsing -------------------------------------------------------------------------------------------


def _snowflake(value: Any, what: str) -> int:
    if not isinstance(value, str) or not _SNOWFLAKE.match(value) or int(value) <= 0:
        raise Malformed(f"{what} is not a snowflake")
    return int(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse(payload: Any) -> Interaction:
    if not isinstance(payload, dict):
        raise Malformed("the body is not a JSON object")
    kind = payload.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise Malformed("type is missing")
    interaction_id = _snowflake(payload.get("id"), "id")
    if kind == PING:
        return Interaction(interaction_id, kind, str(payload.get("application_id", "")), "", 0, "", {}, False)
    if kind not in (APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT):
        raise Malformed(f"interaction type {kind} is not supported")
    # In a server the user is inside `member`; in a DM it is `user`.
    member = payload.get("member")
    user = member.get("user") if isinstance(member, dict) else payload.get("user")
    if not isinstance(user, dict):
        raise Malformed("the interaction names no user")
    data = payload.get("data")
    token = payload.get("token")
    if not isinstance(data, dict) or not isinstance(token, str) or not token:
        raise Malformed("data and token are required")
    username = _text(user.get("username"))
    return Interaction(
        id=interaction_id,
        type=kind,
        application_id=str(_snowflake(payload.get("application_id"), "application_id")),
        token=token,
        discord_user_id=_snowflake(user.get("id"), "user.id"),
        username=username,
        data=data,
        from_message=isinstance(payload.get("message"), dict),
    )


# --- answering -----------------------------------------------------------------------------------------


def answer(interaction: Interaction) -> dict[str, Any]:
    """The response body for a signed, well-formed interaction. The same interaction id always gets the
    first answer it got."""
    if interaction.type == PING:
        return {"type": PONG}
    done = InteractionReceipt.objects.filter(interaction_id=interaction.id).first()
    if done is not None:
        return done.response
    user = notifications.user_for_discord_id(
        discord_user_id=interaction.discord_user_id, username_hint=interaction.username
    )
    result = _route(interaction, user.pk)
    try:
        with transaction.atomic():
            InteractionReceipt.objects.create(
                interaction_id=interaction.id, kind=interaction.type, user_id=user.pk, response=result.body
            )
            if result.follow_up is not None:
                escrow_id, version, note = result.follow_up
                FollowUp.objects.create(
                    interaction_id=interaction.id,
                    application_id=interaction.application_id,
                    token=interaction.token,
                    user_id=user.pk,
                    escrow_id=escrow_id,
                    min_version=version,
                    note=note[:500],
                )
    except IntegrityError:
        # The same interaction answered concurrently: its command id made the effect one; answer as it did.
        first = InteractionReceipt.objects.filter(interaction_id=interaction.id).first()
        if first is not None:
            return first.response
        raise
    return result.body


def _route(interaction: Interaction, user_id: int) -> Answer:
    if interaction.type == APPLICATION_COMMAND:
        return _command(interaction, user_id)
    if interaction.type == MESSAGE_COMPONENT:
        return _click(interaction, user_id)
    return _modal_submit(interaction, user_id)


def say(text: str) -> Answer:
    """An ephemeral message in words: only the person who clicked or typed sees it."""
    return Answer(
        {"type": CHANNEL_MESSAGE, "data": {"content": text, "flags": EPHEMERAL, "allowed_mentions": {"parse": []}}}
    )


def _options(options: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for option in options if isinstance(options, list) else []:
        if isinstance(option, dict) and isinstance(option.get("name"), str):
            found[option["name"]] = option
    return found


def _command(interaction: Interaction, user_id: int) -> Answer:
    data = interaction.data
    if data.get("name") != COMMAND_NAME:
        return say(
            f"I don't know the command /{data.get('name', '')}. Try /escrow create, /escrow list or /escrow status."
        )
    subs = [o for o in _options(data.get("options")).values() if o.get("type") == SUB_COMMAND]
    if len(subs) != 1:
        return say("Use /escrow create, /escrow list or /escrow status.")
    sub = subs[0]
    values = {name: option.get("value") for name, option in _options(sub.get("options")).items()}
    if sub["name"] == "create":
        return _create(interaction, user_id, values)
    if sub["name"] == "list":
        return _list(user_id)
    if sub["name"] == "status":
        return _status(user_id, values.get("id"))
    return say(f"I don't know /escrow {sub['name']}. Try /escrow create, /escrow list or /escrow status.")


def _parse_amount(value: Any) -> int | None:
    if not isinstance(value, str) or not _AMOUNT.match(value.strip()):
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        return None
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_DOWN))


def _create(interaction: Interaction, user_id: int, values: dict[str, Any]) -> Answer:
    role = values.get("role") or "buyer"
    if role not in ("buyer", "seller"):
        return say("role must be buyer or seller.")
    currency = settings.ESCROW_CURRENCIES[0]
    amount_minor = _parse_amount(values.get("amount"))
    if amount_minor is None:
        return say('amount must be a number with at most two decimals, like "149.99".')
    low, high = settings.ESCROW_MIN_AMOUNT_MINOR, settings.ESCROW_MAX_AMOUNT_MINOR
    if not low <= amount_minor <= high:
        return say(f"amount must be from {amount_display(low, currency)} to {amount_display(high, currency)}.")
    item = values.get("item")
    if not isinstance(item, str) or not item.strip():
        return say("Say what is traded in item.")
    try:
        counterparty_discord_id = _snowflake(values.get("counterparty"), "counterparty")
    except Malformed:
        return say("Choose the other party of the deal in counterparty.")
    resolved = interaction.data.get("resolved")
    users = resolved.get("users") if isinstance(resolved, dict) else None
    counterparty = users.get(str(counterparty_discord_id)) if isinstance(users, dict) else None
    if not isinstance(counterparty, dict):
        counterparty = {}
    if counterparty.get("bot"):
        return say("The other party must be a person, not a bot.")
    if counterparty_discord_id == interaction.discord_user_id:
        return say("You cannot open a deal with yourself.")
    other = notifications.user_for_discord_id(
        discord_user_id=counterparty_discord_id, username_hint=_text(counterparty.get("username"))
    )
    command = _create_command(
        interaction=interaction,
        user_id=user_id,
        other_id=other.pk,
        role=role,
        amount=Money(amount_minor=amount_minor, currency=currency),
        description=item.strip()[:500],
    )
    return _dispatch(interaction, user_id, command, note="Deal opened: the other party is asked to accept it.")


def _create_command(
    *, interaction: Interaction, user_id: int, other_id: int, role: str, amount: Money, description: str
) -> escrow_v1.CreateEscrow:
    """The caller creates the deal on their side (`role`); the other party accepts or declines it."""
    buyer_id, seller_id = (user_id, other_id) if role == "buyer" else (other_id, user_id)
    return escrow_v1.CreateEscrow(
        escrow_id=str(uuid.uuid5(interaction.command_id, "escrow")),
        buyer_id=buyer_id,
        seller_id=seller_id,
        amount=amount,
        description=description,
        actor=Actor(kind=ActorKind.USER, user_id=user_id),
    )


def _list(user_id: int) -> Answer:
    views = list(projections.escrow_views_for_user(user_id=user_id)[:10])
    if not views:
        return say("You have no deals yet. Open one with /escrow create.")
    lines = [
        f"`{v.escrow_id}` **{v.state}** {amount_display(v.amount_minor, v.currency)} for {v.description!r} "
        f"(you {'buy' if v.buyer_id == user_id else 'sell'})"
        for v in views
    ]
    return say("Your latest deals (see one with /escrow status id:<id>):\n" + "\n".join(lines))


def _status(user_id: int, escrow_id: Any) -> Answer:
    view = _view_for(user_id, escrow_id)
    if view is None:
        return say("You have no deal with that id. /escrow list shows yours.")
    return Answer({"type": CHANNEL_MESSAGE, "data": deal_message(view, user_id)})


def _view_for(user_id: int, escrow_id: Any) -> Any:
    try:
        parsed = uuid.UUID(str(escrow_id).strip())
    except ValueError:
        return None
    view = projections.escrow_view_get(escrow_id=str(parsed))
    if view is None or user_id not in (view.buyer_id, view.seller_id):
        return None
    return view


def _click(interaction: Interaction, user_id: int) -> Answer:
    parsed = notifications.parse_custom_id(interaction.data.get("custom_id", ""))
    if parsed is None:
        return say("This button is not one I know; nothing was changed.")
    action, escrow_id = parsed
    view = _view_for(user_id, escrow_id)
    if view is None:
        # Someone else's deal (a forwarded message): no existence leak, no effect.
        return say("This button belongs to someone else's deal; nothing was changed.")
    if action not in actions_now(view, user_id):
        return say(f"You cannot {_VERB[action]} this deal now: it is {view.state}. Nothing was changed.")
    if action == "dispute":
        return Answer(
            {
                "type": MODAL,
                "data": {
                    "custom_id": notifications.custom_id(action="dispute", escrow_id=escrow_id),
                    "title": "Open a dispute",
                    "components": [
                        {
                            "type": 1,
                            "components": [
                                {
                                    "type": TEXT_INPUT,
                                    "custom_id": STATEMENT_FIELD,
                                    "style": PARAGRAPH,
                                    "label": "What went wrong?",
                                    "min_length": 10,
                                    "max_length": 1000,
                                    "required": True,
                                    "placeholder": "Say what you expected, what happened, and what you have tried.",
                                }
                            ],
                        }
                    ],
                },
            }
        )
    actor = Actor(kind=ActorKind.USER, user_id=user_id)
    command: Any
    if action == "deliver":
        command = escrow_v1.MarkDelivered(escrow_id=str(escrow_id), actor=actor)
    elif action == "release":
        command = escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=actor)
    elif action == "cancel":
        command = escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=actor, reason="cancelled on Discord")
    elif action == "accept":
        command = escrow.AcceptEscrow(escrow_id=str(escrow_id), actor=actor)
    else:
        command = escrow.DeclineEscrow(escrow_id=str(escrow_id), actor=actor, reason="declined on Discord")
    return _dispatch(interaction, user_id, command, note=_DONE[action])


_DONE = {
    "accept": "You accepted the deal.",
    "decline": "You declined the deal.",
    "deliver": "Marked delivered.",
    "release": "Release requested: the seller is being paid.",
    "dispute": "Dispute opened: our staff will review it.",
    "cancel": "Cancelled.",
}


def _modal_submit(interaction: Interaction, user_id: int) -> Answer:
    parsed = notifications.parse_custom_id(interaction.data.get("custom_id", ""))
    if parsed is None or parsed[0] != "dispute":
        return say("This form is not one I know; nothing was changed.")
    statement = ""
    for row in interaction.data.get("components") or []:
        for field in (row.get("components") or []) if isinstance(row, dict) else []:
            if isinstance(field, dict) and field.get("custom_id") == STATEMENT_FIELD:
                statement = _text(field.get("value"))
    escrow_id = parsed[1]
    view = _view_for(user_id, escrow_id)
    if view is None:
        return say("This form belongs to someone else's deal; nothing was changed.")
    if not statement.strip():
        return say("A dispute needs a statement; nothing was changed.")
    command = escrow_v1.OpenDispute(
        escrow_id=str(escrow_id), actor=Actor(kind=ActorKind.USER, user_id=user_id), reason=statement.strip()[:1000]
    )
    return _dispatch(interaction, user_id, command, note=_DONE["dispute"])


def _dispatch(interaction: Interaction, user_id: int, command: Any, *, note: str) -> Answer:
    try:
        result = escrow.dispatch(command, command_id=interaction.command_id)
    except escrow.EscrowNotFound:
        return say("You have no deal with that id; nothing was changed.")
    except escrow.EscrowError as exc:
        state = f" (the deal is {exc.extra['state']})" if exc.extra.get("state") else ""
        return say(f"Refused: {exc.detail}{state}. Nothing was changed.")
    # Read-your-writes: the answer shows the deal as the command left it, if the read model gets there in
    # time; otherwise the interaction is deferred and the worker follows up.
    shown = projections.escrow_view_wait(
        escrow_id=str(result.escrow_id), version=result.version, timeout_seconds=settings.DISCORD_REPLY_WAIT_SECONDS
    )
    view = projections.escrow_view_get(escrow_id=str(result.escrow_id)) if shown else None
    update = interaction.from_message and interaction.type in (MESSAGE_COMPONENT, MODAL_SUBMIT)
    if view is None:
        deferred: dict[str, Any] = (
            {"type": DEFERRED_UPDATE_MESSAGE}
            if update
            else {"type": DEFERRED_CHANNEL_MESSAGE, "data": {"flags": EPHEMERAL}}
        )
        return Answer(deferred, follow_up=(result.escrow_id, result.version, note))
    return Answer(
        {"type": UPDATE_MESSAGE if update else CHANNEL_MESSAGE, "data": deal_message(view, user_id, note=note)}
    )


# --- the deal, as one person sees it ---------------------------------------------------------------------


def role_of(view: Any, user_id: int) -> str:
    return "buyer" if view.buyer_id == user_id else "seller"


def actions_now(view: Any, user_id: int) -> list[str]:
    """What this person may do now, from the escrow service's own rules (shown, then re-checked on click)."""
    return escrow.allowed_actions(view, user_id)


def checkout_url(view: Any, user_id: int) -> str | None:
    """The buyer's checkout page (a capability link that expires with the funding deadline)."""
    if view.state != S.AWAIT_FUNDS or user_id != view.buyer_id:
        return None
    return payments.checkout_url(escrow_id=str(view.escrow_id), funding_deadline=view.funding_deadline)


def _who(user_id: int) -> str:
    discord_id = notifications.discord_id_for_user(user_id=user_id)
    return f"<@{discord_id}>" if discord_id else f"user {user_id}"


def deal_message(view: Any, user_id: int, *, note: str = "") -> dict[str, Any]:
    """The message data for one party: terms, state by name, the next step, and the buttons for what
    this person may do now. Ephemeral (only they see it) and mentions do not ping anyone."""
    role = role_of(view, user_id)
    other_role = "seller" if role == "buyer" else "buyer"
    other = _who(view.seller_id if role == "buyer" else view.buyer_id)
    lines = [note] if note else []
    lines += [
        f"**{view.description}** for **{amount_display(view.amount_minor, view.currency)}**",
        f"You are the {role}; the {other_role} is {other}.",
        f"State: **{view.state}**. {_next_step(view, user_id, role)}".strip(),
    ]
    deadline = _deadline(view)
    if deadline:
        lines.append(deadline)
    lines.append(f"Deal `{view.escrow_id}`")
    actions = actions_now(view, user_id)
    components = notifications.deal_buttons(
        escrow_id=view.escrow_id,
        actions=actions,
        checkout_url=checkout_url(view, user_id) if "pay" in actions else None,
    )
    return {
        "content": "\n".join(lines),
        "components": components,
        "flags": EPHEMERAL,
        "allowed_mentions": {"parse": []},
    }


def _next_step(view: Any, user_id: int, role: str) -> str:
    if view.state == S.AWAIT_ACCEPTANCE:
        side = "creator" if user_id == (view.created_by_id or view.buyer_id) else "counterparty"
        return NEXT_STEP[S.AWAIT_ACCEPTANCE][side]
    return NEXT_STEP.get(view.state, {}).get(role, "")


def _deadline(view: Any) -> str:
    when: datetime.datetime | None = None
    label = ""
    if view.state == S.AWAIT_ACCEPTANCE:
        when, label = view.acceptance_deadline, "Accept by"
    elif view.state == S.AWAIT_FUNDS:
        when, label = view.funding_deadline, "Funding deadline"
    elif view.state == S.DELIVERED:
        when, label = view.inspection_deadline, "Inspection ends"
    if when is None:
        return ""
    # Discord renders <t:unix:R> in each reader's own time zone ("in 3 hours").
    return f"{label}: <t:{int(when.timestamp())}:f> (<t:{int(when.timestamp())}:R>)"
