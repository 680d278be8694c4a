"""Given-steps for escrow tests: escrows in every state, reached through `dispatch` and the escrow
subscriber's real handlers (with its dedupe), never by writing a state column."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from apps.escrow.handlers import SUBSCRIBER as ESCROW_SUBSCRIBER
from apps.escrow.models import Escrow, EscrowEvent, ProcessedCommand
from apps.escrow.public import CommandResult, dispatch
from apps.escrow.rules import fee_for
from apps.outbox.apply import handle_with_dedupe
from apps.outbox.messages import topic_for, type_name
from apps.outbox.models import OutboxMessage
from apps.outbox.public import Delivery
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1

AMOUNT = 14_999
CURRENCY = "USD"


def user(u: Any) -> Actor:
    return Actor(kind=ActorKind.USER, user_id=u.pk)


def staff_actor(u: Any) -> Actor:
    return Actor(kind=ActorKind.STAFF, user_id=u.pk)


TIMER = Actor(kind=ActorKind.TIMER)
SYSTEM = Actor(kind=ActorKind.SYSTEM)


def money(amount_minor: int, currency: str = CURRENCY) -> Money:
    return Money(amount_minor=amount_minor, currency=currency)


def propose(
    *, buyer: Any, seller: Any, amount_minor: int = AMOUNT, currency: str = CURRENCY, creator: Any = None
) -> uuid.UUID:
    """A deal created by `creator` (the buyer unless said otherwise), waiting for the other party."""
    escrow_id = uuid.uuid4()
    dispatch(
        escrow_v1.CreateEscrow(
            escrow_id=str(escrow_id),
            buyer_id=buyer.pk,
            seller_id=seller.pk,
            amount=money(amount_minor, currency),
            description="Dominus Empyreus",
            actor=user(creator or buyer),
        ),
        command_id=uuid.uuid4(),
    )
    return escrow_id


def create(*, buyer: Any, seller: Any, amount_minor: int = AMOUNT, currency: str = CURRENCY) -> uuid.UUID:
    """A deal the buyer created and the seller accepted: AWAIT_FUNDS."""
    escrow_id = propose(buyer=buyer, seller=seller, amount_minor=amount_minor, currency=currency)
    send(escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=user(seller)))
    return escrow_id


def deliver_to_escrow(event: Any, *, event_id: uuid.UUID | None = None) -> bool:
    """Hands a payments event to the escrow subscriber exactly as a Kafka consumer would."""
    delivery = Delivery(
        event_id=event_id or uuid.uuid4(),
        type=type_name(event),
        topic=topic_for(event),
        key=event.escrow_id,
        aggregate_id=event.escrow_id,
        aggregate_version=0,
        occurred_at=timezone.now(),
    )
    return handle_with_dedupe(ESCROW_SUBSCRIBER, event, delivery)


def send(command: Any) -> CommandResult:
    return dispatch(command, command_id=uuid.uuid4())


def paid(escrow_id: uuid.UUID, amount_minor: int = AMOUNT, currency: str = CURRENCY) -> None:
    deliver_to_escrow(
        payments_v1.PaymentSucceeded(
            escrow_id=str(escrow_id),
            amount=money(amount_minor, currency),
            provider="sandbox",
            provider_payment_id="pi_test",
        )
    )


def transferred(escrow_id: uuid.UUID) -> None:
    escrow = Escrow.objects.get(pk=escrow_id)
    gross = escrow.pending_payout_minor
    fee = fee_for(gross, escrow.fee_bps)
    deliver_to_escrow(
        payments_v1.TransferSucceeded(
            escrow_id=str(escrow_id),
            amount=money(gross - fee, escrow.currency),
            fee=money(fee, escrow.currency),
            provider="sandbox",
            provider_transfer_id="tr_test",
        )
    )


def refunded(escrow_id: uuid.UUID) -> None:
    escrow = Escrow.objects.get(pk=escrow_id)
    deliver_to_escrow(
        payments_v1.RefundSucceeded(
            escrow_id=str(escrow_id),
            amount=money(escrow.pending_refund_minor, escrow.currency),
            provider="sandbox",
            provider_refund_id="re_test",
        )
    )


def escrow_in(state: str, *, buyer: Any, seller: Any, staff: Any) -> uuid.UUID:
    """An escrow brought to `state` along the path DESIGN.md's table describes."""
    if state == "AWAIT_ACCEPTANCE":
        return propose(buyer=buyer, seller=seller)
    eid = create(buyer=buyer, seller=seller)
    e = str(eid)
    if state == "AWAIT_FUNDS":
        return eid
    if state == "CANCELLED":
        send(escrow_v1.CancelEscrow(escrow_id=e, actor=user(buyer), reason="changed my mind"))
        return eid
    paid(eid)
    if state == "FUNDS_HELD":
        return eid
    if state in ("REFUNDING", "REFUNDED"):
        send(escrow_v1.CancelEscrow(escrow_id=e, actor=user(seller), reason="out of stock"))
        if state == "REFUNDED":
            refunded(eid)
        return eid
    if state == "DISPUTED":
        send(escrow_v1.OpenDispute(escrow_id=e, actor=user(buyer), reason="not as described"))
        return eid
    send(escrow_v1.MarkDelivered(escrow_id=e, actor=user(seller)))
    if state == "DELIVERED":
        return eid
    send(escrow_v1.ReleaseFunds(escrow_id=e, actor=user(buyer)))
    if state == "RELEASING":
        return eid
    transferred(eid)
    assert state == "RELEASED", state
    return eid


def footprint() -> tuple[int, int, int]:
    """What any accepted command or reaction writes: audit rows, outbox rows, processed commands."""
    return EscrowEvent.objects.count(), OutboxMessage.objects.count(), ProcessedCommand.objects.count()


def snapshot(escrow_id: uuid.UUID) -> dict[str, Any]:
    fields = (
        "state",
        "version",
        "received_minor",
        "held_minor",
        "paid_out_minor",
        "refunded_minor",
        "fee_minor",
        "pending_payout_minor",
        "pending_refund_minor",
        "attention",
    )
    return Escrow.objects.filter(pk=escrow_id).values(*fields).get()


def assert_books_balance(escrow_id: uuid.UUID) -> None:
    e = Escrow.objects.get(pk=escrow_id)
    assert e.received_minor == e.held_minor + e.paid_out_minor + e.refunded_minor + e.fee_minor, snapshot(escrow_id)
    for name in (
        "received_minor",
        "held_minor",
        "paid_out_minor",
        "refunded_minor",
        "fee_minor",
        "pending_payout_minor",
        "pending_refund_minor",
    ):
        assert getattr(e, name) >= 0, (name, snapshot(escrow_id))


def event_types(escrow_id: uuid.UUID) -> list[str]:
    return [
        t.rpartition(".")[2]
        for t in EscrowEvent.objects.filter(escrow_id=escrow_id).order_by("version").values_list("type", flat=True)
    ]


def outbox_types_since(escrow_id: uuid.UUID, after_id: int) -> list[str]:
    rows = OutboxMessage.objects.filter(aggregate_id=str(escrow_id), id__gt=after_id).order_by("id")
    return [t.rpartition(".")[2] for t in rows.values_list("type", flat=True)]


def last_outbox_id() -> int:
    return OutboxMessage.objects.order_by("-id").values_list("id", flat=True).first() or 0
