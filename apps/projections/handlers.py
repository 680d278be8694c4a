"""Every event the projections service reacts to: all escrow events, folded into the escrow view and
the timeline. Each handler runs in the subscriber's transaction with its checkpoint."""

from __future__ import annotations

from typing import Any

import betterproto2

from apps.outbox.bus import Delivery, Subscriber
from apps.projections.models import EscrowView, TimelineEntry
from proto.common.v1 import Actor, ActorKind
from proto.escrow import v1 as escrow_v1

_ACTOR_KINDS = {ActorKind.USER: "user", ActorKind.STAFF: "staff", ActorKind.TIMER: "timer",
                ActorKind.SYSTEM: "system"}


def _timeline(event: betterproto2.Message, delivery: Delivery) -> None:
    actor: Actor | None = getattr(event, "actor", None)
    TimelineEntry.objects.create(
        escrow_id=delivery.aggregate_id,
        version=delivery.aggregate_version,
        event_id=delivery.event_id,
        type=delivery.type.rsplit(".", 1)[-1],
        occurred_at=delivery.occurred_at,
        actor_kind=_ACTOR_KINDS.get(actor.kind, "") if actor is not None else "system",
        actor_id=actor.user_id if actor is not None and actor.user_id else None,
        data=event.to_dict(casing=betterproto2.Casing.SNAKE),
    )


def _update(delivery: Delivery, **changes: Any) -> EscrowView:
    view = EscrowView.objects.select_for_update().get(escrow_id=delivery.aggregate_id)
    for name, value in changes.items():
        setattr(view, name, value)
    view.version = delivery.aggregate_version
    view.updated_at = delivery.occurred_at
    view.save()
    return view


def on_created(event: escrow_v1.EscrowCreated, delivery: Delivery) -> None:
    EscrowView.objects.create(
        escrow_id=event.escrow_id,
        buyer_id=event.buyer_id,
        seller_id=event.seller_id,
        state="AWAIT_FUNDS",
        amount_minor=event.amount.amount_minor,
        currency=event.amount.currency,
        description=event.description,
        inspection_period_hours=event.inspection_period_hours,
        funding_deadline=event.funding_deadline,
        version=delivery.aggregate_version,
        created_at=delivery.occurred_at,
        updated_at=delivery.occurred_at,
    )
    _timeline(event, delivery)


def on_funds_held(event: escrow_v1.EscrowFundsHeld, delivery: Delivery) -> None:
    _update(delivery, state="FUNDS_HELD")
    _timeline(event, delivery)


def on_delivered(event: escrow_v1.EscrowDelivered, delivery: Delivery) -> None:
    _update(delivery, state="DELIVERED", inspection_deadline=event.inspection_deadline)
    _timeline(event, delivery)


def on_release_requested(event: escrow_v1.EscrowReleaseRequested, delivery: Delivery) -> None:
    _update(delivery, state="RELEASING", payout_pending=True)
    _timeline(event, delivery)


def on_refund_requested(event: escrow_v1.EscrowRefundRequested, delivery: Delivery) -> None:
    view = EscrowView.objects.get(escrow_id=delivery.aggregate_id)
    # In a split the escrow stays RELEASING until both legs are done.
    _update(delivery, state="RELEASING" if view.payout_pending else "REFUNDING", refund_pending=True)
    _timeline(event, delivery)


def on_cancelled(event: escrow_v1.EscrowCancelled, delivery: Delivery) -> None:
    view = EscrowView.objects.get(escrow_id=delivery.aggregate_id)
    _update(delivery, state="REFUNDING" if view.refund_pending else "CANCELLED")
    _timeline(event, delivery)


def on_disputed(event: escrow_v1.EscrowDisputed, delivery: Delivery) -> None:
    _update(delivery, state="DISPUTED", dispute_reason=event.reason)
    _timeline(event, delivery)


def on_dispute_resolved(event: escrow_v1.EscrowDisputeResolved, delivery: Delivery) -> None:
    _update(delivery)
    _timeline(event, delivery)


def _settled_state(view: EscrowView) -> str:
    if view.payout_pending or view.refund_pending:
        return view.state
    return "RELEASED" if view.paid_to_seller_minor else "REFUNDED"


def on_released(event: escrow_v1.EscrowReleased, delivery: Delivery) -> None:
    view = EscrowView.objects.select_for_update().get(escrow_id=delivery.aggregate_id)
    view.paid_to_seller_minor += event.paid_to_seller.amount_minor
    view.fee_minor += event.fee.amount_minor
    view.payout_pending = False
    _update(delivery, paid_to_seller_minor=view.paid_to_seller_minor, fee_minor=view.fee_minor,
            payout_pending=False, state=_settled_state(view), attention="")
    _timeline(event, delivery)


def on_refunded(event: escrow_v1.EscrowRefunded, delivery: Delivery) -> None:
    view = EscrowView.objects.select_for_update().get(escrow_id=delivery.aggregate_id)
    view.refunded_minor += event.amount.amount_minor
    view.refund_pending = False
    _update(delivery, refunded_minor=view.refunded_minor, refund_pending=False, state=_settled_state(view),
            attention="")
    _timeline(event, delivery)


def on_needs_attention(event: escrow_v1.EscrowNeedsAttention, delivery: Delivery) -> None:
    _update(delivery, attention=event.reason)
    _timeline(event, delivery)


def on_compliance_hold(event: escrow_v1.EscrowComplianceHold, delivery: Delivery) -> None:
    _update(delivery, attention="compliance_hold")
    _timeline(event, delivery)


SUBSCRIBER = Subscriber(
    name="projections",
    handlers={
        escrow_v1.EscrowCreated: on_created,
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
    },
)
