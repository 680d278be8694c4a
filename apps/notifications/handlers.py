"""Every event the notifications service reacts to: escrow state changes that concern the buyer or the
seller become a Notification row each (one per event and user, however often the event arrives).

The rows are written in the bus transaction; the DMs are sent after it commits (apps.notifications.
delivery), never inside it."""

from __future__ import annotations

from types import SimpleNamespace

from django.conf import settings

from apps.core.public import amount_display
from apps.escrow import public as escrow
from apps.notifications.components import deal_buttons
from apps.notifications.delivery import deliver_after_commit
from apps.notifications.models import EscrowParties, Notification
from apps.outbox.public import Delivery, Subscriber
from apps.payments import public as payments
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1

BUYER, SELLER = "buyer", "seller"
# The states below name what an event written before events carried their state left the escrow in.
S = escrow.EscrowState


def _amount(money: object) -> str:
    return amount_display(getattr(money, "amount_minor", 0), getattr(money, "currency", ""))


def _link(escrow_id: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/api/v1/escrows/{escrow_id}"


def _buttons(deal: SimpleNamespace, escrow_id: str, user_id: int, funding_deadline: object) -> list[dict[str, object]]:
    """Buttons for what this user may do in the state the event left the escrow in (the escrow's own
    rules, applied to what the event says, so no read of the escrow's tables)."""
    actions = escrow.allowed_actions(deal, user_id)
    checkout = None
    if "pay" in actions and funding_deadline is not None:
        checkout = payments.checkout_url(escrow_id=escrow_id, funding_deadline=funding_deadline)  # type: ignore[arg-type]
    return deal_buttons(escrow_id=escrow_id, actions=actions, checkout_url=checkout)


def _notify(
    delivery: Delivery,
    kind: str,
    texts: dict[str, str],
    *,
    funding_deadline: object = None,
    created_by_id: int = 0,
    buttons_for: str = "",
) -> None:
    """One DM per party. After an event that leaves someone something to do, `buttons_for` is the state the
    event left the escrow in (the event says which): the DM carries buttons for what each party may do in
    it (every click is checked again by the escrow)."""
    parties = EscrowParties.objects.filter(escrow_id=delivery.aggregate_id).first()
    if parties is None:
        return
    deal = SimpleNamespace(
        state=buttons_for,
        buyer_id=parties.buyer_id,
        seller_id=parties.seller_id,
        created_by_id=created_by_id or parties.buyer_id,
    )
    users = {BUYER: parties.buyer_id, SELLER: parties.seller_id}
    owed: dict[int, str] = {}
    for role, text in texts.items():
        owed.setdefault(users[role], text)
    # One read and one insert (get_or_create would cost a read, a savepoint, an insert and a release per
    # user); the unique constraint on (event, user) still backs the read up.
    sent_before = set(
        Notification.objects.filter(event_id=delivery.event_id, user_id__in=list(owed)).values_list(
            "user_id", flat=True
        )
    )
    created = [
        notification.pk
        for notification in Notification.objects.bulk_create(
            [
                Notification(
                    event_id=delivery.event_id,
                    user_id=user_id,
                    escrow_id=delivery.aggregate_id,
                    kind=kind,
                    text=f"{text} {_link(delivery.aggregate_id)}",
                    components=_buttons(deal, delivery.aggregate_id, user_id, funding_deadline) if buttons_for else [],
                )
                for user_id, text in owed.items()
                if user_id not in sent_before
            ]
        )
    ]
    deliver_after_commit(created)


def on_created(event: escrow_v1.EscrowCreated, delivery: Delivery) -> None:
    EscrowParties.objects.get_or_create(
        escrow_id=event.escrow_id, defaults={"buyer_id": event.buyer_id, "seller_id": event.seller_id}
    )
    amount = _amount(event.amount)
    if not event.created_by_id:
        # An event from before deals waited for acceptance.
        _notify(
            delivery,
            "escrow_created",
            {
                BUYER: f"Escrow for {amount} created. Next: pay it before the funding deadline.",
                SELLER: f"A buyer opened an escrow for {amount}. Wait for the funds before you deliver.",
            },
            buttons_for=event.state or S.AWAIT_FUNDS,
        )
        return
    creator, counterparty = (SELLER, BUYER) if event.created_by_id == event.seller_id else (BUYER, SELLER)
    # The description is the escrow's own record; the event does not carry it.
    description = escrow.event_text(delivery.event_id).get("description", "")
    # The counterparty is asked first (dict order): one row per user, and the one that matters is theirs.
    _notify(
        delivery,
        "escrow_created",
        {
            counterparty: f"A {creator} proposes a deal for {amount}: {description[:200]}. "
            f"Next: accept it or decline it.",
            creator: f"Deal for {amount} created. Next: wait for the {counterparty} to accept it.",
        },
        created_by_id=event.created_by_id,
        buttons_for=event.state or S.AWAIT_ACCEPTANCE,
    )


def on_accepted(event: escrow_v1.EscrowAccepted, delivery: Delivery) -> None:
    _notify(
        delivery,
        "escrow_accepted",
        {
            BUYER: "The deal was accepted. Next: pay it before the funding deadline.",
            SELLER: "The deal was accepted. Wait for the buyer's payment before you deliver.",
        },
        funding_deadline=event.funding_deadline,
        buttons_for=event.state or S.AWAIT_FUNDS,
    )


def on_declined(event: escrow_v1.EscrowDeclined, delivery: Delivery) -> None:
    _notify(
        delivery,
        "escrow_declined",
        {
            BUYER: "The deal was declined; it is cancelled and nothing was paid.",
            SELLER: "The deal was declined; it is cancelled and nothing was paid.",
        },
    )


def on_funds_held(event: escrow_v1.EscrowFundsHeld, delivery: Delivery) -> None:
    _notify(
        delivery,
        "funds_held",
        {
            BUYER: "Your payment is held in escrow. Next: wait for the seller to deliver.",
            SELLER: "The buyer's money is held in escrow. Next: deliver the item, then mark it delivered.",
        },
        buttons_for=event.state or S.FUNDS_HELD,
    )


def on_delivered(event: escrow_v1.EscrowDelivered, delivery: Delivery) -> None:
    _notify(
        delivery,
        "delivered",
        {
            BUYER: "The seller marked the item delivered. Next: check it and release the funds, or open a dispute.",
            SELLER: "Marked delivered. The funds are released when the buyer confirms or the inspection period ends.",
        },
        buttons_for=event.state or S.DELIVERED,
    )


def on_released(event: escrow_v1.EscrowReleased, delivery: Delivery) -> None:
    _notify(
        delivery,
        "released",
        {
            BUYER: "The escrow is complete: the funds went to the seller.",
            SELLER: f"{_amount(event.paid_to_seller)} is on its way to you.",
        },
    )


def on_cancelled(event: escrow_v1.EscrowCancelled, delivery: Delivery) -> None:
    _notify(delivery, "cancelled", {BUYER: "The escrow was cancelled.", SELLER: "The escrow was cancelled."})


def on_refunded(event: escrow_v1.EscrowRefunded, delivery: Delivery) -> None:
    _notify(
        delivery,
        "refunded",
        {
            BUYER: f"{_amount(event.amount)} was refunded to you.",
            SELLER: "The buyer was refunded.",
        },
    )


def on_disputed(event: escrow_v1.EscrowDisputed, delivery: Delivery) -> None:
    _notify(
        delivery,
        "disputed",
        {
            BUYER: "A dispute is open. Our staff will review it; the funds stay held.",
            SELLER: "A dispute is open. Our staff will review it; the funds stay held.",
        },
    )


def on_dispute_resolved(event: escrow_v1.EscrowDisputeResolved, delivery: Delivery) -> None:
    _notify(
        delivery,
        "dispute_resolved",
        {
            BUYER: f"The dispute was resolved: {_amount(event.buyer_amount)} back to you.",
            SELLER: f"The dispute was resolved: {_amount(event.seller_amount)} (before fees) to you.",
        },
    )


def on_transfer_failed(event: payments_v1.TransferFailed, delivery: Delivery) -> None:
    """A payout parked because the seller has not said where to be paid: they are told how to fix it."""
    if not event.awaiting_destination:
        return  # other payout failures are ops' to handle; the seller's money stays held meanwhile
    rail = "usdc" if event.provider == "custodian" else "card"
    _notify(
        delivery, "payout_waiting", {SELLER: payments.payout_waiting_words(rail=rail, amount=_amount(event.amount))}
    )


SUBSCRIBER = Subscriber(
    name="notifications",
    handlers={
        escrow_v1.EscrowCreated: on_created,
        escrow_v1.EscrowAccepted: on_accepted,
        escrow_v1.EscrowDeclined: on_declined,
        escrow_v1.EscrowFundsHeld: on_funds_held,
        escrow_v1.EscrowDelivered: on_delivered,
        escrow_v1.EscrowReleased: on_released,
        escrow_v1.EscrowCancelled: on_cancelled,
        escrow_v1.EscrowRefunded: on_refunded,
        escrow_v1.EscrowDisputed: on_disputed,
        escrow_v1.EscrowDisputeResolved: on_dispute_resolved,
        payments_v1.TransferFailed: on_transfer_failed,
    },
)
