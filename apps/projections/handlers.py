"""Every event the projections service reacts to: all escrow events, folded into the escrow view, the
timeline and the daily figures.

The state comes from the event: each escrow event carries the state the escrow is in once it applies
(`state`). Events written before they carried it (empty `state`) are read as the projections read them
then (`_legacy_*` below), so a rebuild from an old event log gives the same views.

Each fold takes the `Tables` it writes, so the same code feeds the live colour (through the bus, in the
subscriber's transaction with its checkpoint) and the colour a rebuild is refilling from the event log.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import betterproto2
from django.db.models import F

from apps.escrow import public as escrow
from apps.outbox.public import Delivery, Subscriber
from apps.projections.models import EscrowViewFields
from apps.projections.tables import Tables, live_tables_locked
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1

_ACTOR_KINDS = {ActorKind.USER: "user", ActorKind.STAFF: "staff", ActorKind.TIMER: "timer", ActorKind.SYSTEM: "system"}

Fold = Callable[[Any, Delivery, Tables], None]


def _text(event: betterproto2.Message, delivery: Delivery) -> dict[str, str]:
    """The free text recorded with the event (a description, a reason, a note): events do not carry it, so it
    is read from the escrow's own record."""
    return escrow.event_text(delivery.event_id) if type(event) in escrow.TEXT_EVENTS else {}


def _timeline(
    event: betterproto2.Message, delivery: Delivery, tables: Tables, text: dict[str, str] | None = None
) -> None:
    actor: Actor | None = getattr(event, "actor", None)
    tables.timeline.objects.create(
        escrow_id=delivery.aggregate_id,
        version=delivery.aggregate_version,
        event_id=delivery.event_id,
        type=delivery.type.rsplit(".", 1)[-1],
        occurred_at=delivery.occurred_at,
        actor_kind=_ACTOR_KINDS.get(actor.kind, "") if actor is not None else "system",
        actor_id=actor.user_id if actor is not None and actor.user_id else None,
        data={**event.to_dict(casing=betterproto2.Casing.SNAKE), **(_text(event, delivery) if text is None else text)},
    )


def _update(delivery: Delivery, tables: Tables, *, state: str = "", **changes: Any) -> EscrowViewFields:
    """Applies `changes` to the escrow's view; `state` (the event's) unless it is empty."""
    view = tables.view.objects.select_for_update().get(escrow_id=delivery.aggregate_id)
    if state:
        changes["state"] = state
    if "state" in changes and changes["state"] != view.state:
        changes.setdefault("state_since", delivery.occurred_at)
    if changes.get("attention") and changes["attention"] != view.attention:
        changes.setdefault("attention_since", delivery.occurred_at)
    elif "attention" in changes and not changes["attention"]:
        changes.update(attention_detail="", attention_since=None)
    for name, value in changes.items():
        setattr(view, name, value)
    view.version = delivery.aggregate_version
    view.updated_at = delivery.occurred_at
    view.save()
    return view


def _count_daily(delivery: Delivery, tables: Tables, amount: Money | None, kind: str) -> None:
    """Adds to the day's figure with one atomic update: several escrows settle on the same day."""
    if amount is None or not amount.amount_minor:
        return
    day: datetime.date = delivery.occurred_at.astimezone(datetime.UTC).date()
    tables.daily.objects.get_or_create(day=day, currency=amount.currency)
    tables.daily.objects.filter(day=day, currency=amount.currency).update(
        **{f"{kind}_minor": F(f"{kind}_minor") + amount.amount_minor, f"{kind}_count": F(f"{kind}_count") + 1}
    )


def _amount(money: Money | None) -> Money:
    """An amount the escrow always sets on this event; a message without it is refused like any other
    malformed one (the handler fails, so the bus retries it and then dead-letters it)."""
    if money is None:
        raise ValueError("the event carries no amount")
    return money


def on_created(event: escrow_v1.EscrowCreated, delivery: Delivery, tables: Tables) -> None:
    text = _text(event, delivery)
    amount = _amount(event.amount)
    tables.view.objects.create(
        escrow_id=event.escrow_id,
        buyer_id=event.buyer_id,
        seller_id=event.seller_id,
        # Events from before two-sided deals name no creator: the buyer created those, already accepted.
        created_by_id=event.created_by_id or event.buyer_id,
        state=event.state or ("AWAIT_ACCEPTANCE" if event.created_by_id else "AWAIT_FUNDS"),
        amount_minor=amount.amount_minor,
        currency=amount.currency,
        description=text.get("description", "")[:500],
        inspection_period_hours=event.inspection_period_hours,
        funding_deadline=event.funding_deadline,
        acceptance_deadline=event.acceptance_deadline,
        state_since=delivery.occurred_at,
        version=delivery.aggregate_version,
        created_at=delivery.occurred_at,
        updated_at=delivery.occurred_at,
    )
    _timeline(event, delivery, tables, text)


def on_accepted(event: escrow_v1.EscrowAccepted, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state or "AWAIT_FUNDS", funding_deadline=event.funding_deadline)
    _timeline(event, delivery, tables)


def on_declined(event: escrow_v1.EscrowDeclined, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state or "CANCELLED")
    _timeline(event, delivery, tables)


def on_funds_held(event: escrow_v1.EscrowFundsHeld, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state or "FUNDS_HELD")
    _count_daily(delivery, tables, event.amount, "held")
    _timeline(event, delivery, tables)


def on_delivered(event: escrow_v1.EscrowDelivered, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state or "DELIVERED", inspection_deadline=event.inspection_deadline)
    _timeline(event, delivery, tables)


def on_release_requested(event: escrow_v1.EscrowReleaseRequested, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state or "RELEASING", payout_pending=True)
    _timeline(event, delivery, tables)


def on_refund_requested(event: escrow_v1.EscrowRefundRequested, delivery: Delivery, tables: Tables) -> None:
    _update(
        delivery, tables, state=event.state or _legacy_refund_requested_state(delivery, tables), refund_pending=True
    )
    _timeline(event, delivery, tables)


def on_cancelled(event: escrow_v1.EscrowCancelled, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state or _legacy_cancelled_state(delivery, tables))
    _timeline(event, delivery, tables)


def on_disputed(event: escrow_v1.EscrowDisputed, delivery: Delivery, tables: Tables) -> None:
    text = _text(event, delivery)
    _update(
        delivery,
        tables,
        state=event.state or "DISPUTED",
        dispute_reason=text.get("reason", ""),
        disputed_at=delivery.occurred_at,
    )
    _timeline(event, delivery, tables, text)


def on_dispute_resolved(event: escrow_v1.EscrowDisputeResolved, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state)
    _timeline(event, delivery, tables)


def on_released(event: escrow_v1.EscrowReleased, delivery: Delivery, tables: Tables) -> None:
    view = tables.view.objects.select_for_update().get(escrow_id=delivery.aggregate_id)
    paid, fee = _amount(event.paid_to_seller), _amount(event.fee)
    view.paid_to_seller_minor += paid.amount_minor
    view.fee_minor += fee.amount_minor
    view.payout_pending = False
    _update(
        delivery,
        tables,
        paid_to_seller_minor=view.paid_to_seller_minor,
        fee_minor=view.fee_minor,
        payout_pending=False,
        state=event.state or _legacy_settled_state(view),
        attention="",
    )
    gross = Money(amount_minor=paid.amount_minor + fee.amount_minor, currency=paid.currency)
    _count_daily(delivery, tables, gross, "released")
    _timeline(event, delivery, tables)


def on_refunded(event: escrow_v1.EscrowRefunded, delivery: Delivery, tables: Tables) -> None:
    view = tables.view.objects.select_for_update().get(escrow_id=delivery.aggregate_id)
    view.refunded_minor += _amount(event.amount).amount_minor
    view.refund_pending = False
    _update(
        delivery,
        tables,
        refunded_minor=view.refunded_minor,
        refund_pending=False,
        state=event.state or _legacy_settled_state(view),
        attention="",
    )
    _count_daily(delivery, tables, event.amount, "refunded")
    _timeline(event, delivery, tables)


def on_needs_attention(event: escrow_v1.EscrowNeedsAttention, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state, attention=event.reason, attention_detail=event.detail[:1000])
    _timeline(event, delivery, tables)


def on_compliance_hold(event: escrow_v1.EscrowComplianceHold, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state, attention="compliance_hold", attention_detail=event.reason[:1000])
    _timeline(event, delivery, tables)


def on_compliance_hold_resolved(
    event: escrow_v1.EscrowComplianceHoldResolved, delivery: Delivery, tables: Tables
) -> None:
    changes: dict[str, Any] = {"attention": "", "attention_detail": ""}
    if event.decision == escrow_v1.ComplianceDecision.REFUND:
        changes["payout_pending"] = False  # a blocked payout never left; the buyer is refunded instead
    if event.funding_deadline is not None:
        changes["funding_deadline"] = event.funding_deadline
    _update(delivery, tables, state=event.state, **changes)
    _timeline(event, delivery, tables)


def on_put_on_hold(event: escrow_v1.EscrowPutOnHold, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state)
    _timeline(event, delivery, tables)


def on_hold_lifted(event: escrow_v1.EscrowHoldLifted, delivery: Delivery, tables: Tables) -> None:
    # The running deadline moved on by the time on hold.
    changes: dict[str, Any] = {}
    if event.funding_deadline is not None:
        changes["funding_deadline"] = event.funding_deadline
    if event.inspection_deadline is not None:
        changes["inspection_deadline"] = event.inspection_deadline
    if event.acceptance_deadline is not None:
        changes["acceptance_deadline"] = event.acceptance_deadline
    _update(delivery, tables, state=event.state, **changes)
    _timeline(event, delivery, tables)


def on_payout_retried(event: escrow_v1.EscrowPayoutRetried, delivery: Delivery, tables: Tables) -> None:
    _update(delivery, tables, state=event.state, attention="")
    _timeline(event, delivery, tables)


def on_stranded_funds_return_requested(
    event: escrow_v1.EscrowStrandedFundsReturnRequested, delivery: Delivery, tables: Tables
) -> None:
    # The escrow clears a mismatch / late-payment flag when ops return the money.
    view = tables.view.objects.get(escrow_id=delivery.aggregate_id)
    changes: dict[str, Any] = {"refund_pending": True}
    if view.attention in ("unexpected_payment", "payment_amount_mismatch"):
        changes["attention"] = ""
    _update(delivery, tables, state=event.state, **changes)
    _timeline(event, delivery, tables)


# --- events written before events carried their state -------------------------------------------------


def _legacy_refund_requested_state(delivery: Delivery, tables: Tables) -> str:
    # In a split the escrow stays RELEASING until both legs are done.
    view = tables.view.objects.get(escrow_id=delivery.aggregate_id)
    return "RELEASING" if view.payout_pending else "REFUNDING"


def _legacy_cancelled_state(delivery: Delivery, tables: Tables) -> str:
    view = tables.view.objects.get(escrow_id=delivery.aggregate_id)
    return "REFUNDING" if view.refund_pending else "CANCELLED"


def _legacy_settled_state(view: EscrowViewFields) -> str:
    if view.payout_pending or view.refund_pending:
        return view.state
    if view.state not in ("RELEASING", "REFUNDING"):
        # A stranded-funds refund in a settled state: money moves, the state does not.
        return view.state
    return "RELEASED" if view.paid_to_seller_minor else "REFUNDED"


FOLDS: dict[type[betterproto2.Message], Fold] = {
    escrow_v1.EscrowCreated: on_created,
    escrow_v1.EscrowAccepted: on_accepted,
    escrow_v1.EscrowDeclined: on_declined,
    escrow_v1.EscrowFundsHeld: on_funds_held,
    escrow_v1.EscrowDelivered: on_delivered,
    escrow_v1.EscrowReleaseRequested: on_release_requested,
    escrow_v1.EscrowRefundRequested: on_refund_requested,
    escrow_v1.EscrowCancelled: on_cancelled,
    escrow_v1.EscrowDisputed: on_disputed,
    escrow_v1.EscrowDisputeResolved: on_dispute_resolved,
    escrow_v1.EscrowReleased: on_released,
    escrow_v1.EscrowRefunded: on_refunded,
    escrow_v1.EscrowNeedsAttention: on_needs_attention,
    escrow_v1.EscrowComplianceHold: on_compliance_hold,
    escrow_v1.EscrowComplianceHoldResolved: on_compliance_hold_resolved,
    escrow_v1.EscrowPutOnHold: on_put_on_hold,
    escrow_v1.EscrowHoldLifted: on_hold_lifted,
    escrow_v1.EscrowPayoutRetried: on_payout_retried,
    escrow_v1.EscrowStrandedFundsReturnRequested: on_stranded_funds_return_requested,
}


def _live(fold: Fold) -> Callable[[Any, Delivery], None]:
    """The bus handler: the same fold, into whichever colour is live at this moment. A rebuild flips the
    pointer only while it holds this subscriber's drain lock (the in-process bus) and the pointer row
    FOR UPDATE, which the handler share-locks (a consumer fed from Kafka), so it cannot change mid-message."""

    def handler(event: Any, delivery: Delivery) -> None:
        fold(event, delivery, live_tables_locked())

    handler.__name__ = fold.__name__
    return handler


SUBSCRIBER = Subscriber(name="projections", handlers={cls: _live(fold) for cls, fold in FOLDS.items()})
