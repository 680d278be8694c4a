"""Every escrow event carries the state the escrow is in once it applies, in the escrow's own log and in
the outbox, so no reader has to decide the state again."""

from __future__ import annotations

import uuid
from typing import Any

from apps.escrow.models import Escrow, EscrowEvent
from apps.outbox.messages import decode
from apps.outbox.models import OutboxMessage
from proto.escrow import v1 as escrow_v1
from tests.escrow import given


def states(escrow_id: uuid.UUID) -> list[tuple[str, str]]:
    """(event type, state it carries) in version order, read from the escrow's log."""
    rows = EscrowEvent.objects.filter(escrow_id=escrow_id).order_by("version")
    return [(row.type.rpartition(".")[2], row.data.get("state", "")) for row in rows]


def test_a_split_resolution_carries_each_state_along_the_way(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("DISPUTED", buyer=buyer, seller=seller, staff=staff)
    given.send(
        escrow_v1.ResolveDispute(
            escrow_id=str(escrow_id),
            actor=given.staff_actor(staff),
            outcome=escrow_v1.DisputeOutcome.SPLIT,
            seller_amount=given.money(10_000),
        )
    )
    given.refunded(escrow_id)
    given.transferred(escrow_id)

    assert states(escrow_id) == [
        ("EscrowCreated", "AWAIT_ACCEPTANCE"),
        ("EscrowAccepted", "AWAIT_FUNDS"),
        ("EscrowFundsHeld", "FUNDS_HELD"),
        ("EscrowDisputed", "DISPUTED"),
        # the decision is recorded while the escrow is still disputed; the requests it makes move it on
        ("EscrowDisputeResolved", "DISPUTED"),
        ("EscrowReleaseRequested", "RELEASING"),
        ("EscrowRefundRequested", "RELEASING"),  # a split stays RELEASING until both legs are done
        ("EscrowRefunded", "RELEASING"),
        ("EscrowReleased", "RELEASED"),
    ]
    assert Escrow.objects.get(pk=escrow_id).state == "RELEASED"


def test_a_cancel_that_refunds_and_the_reactions_that_change_no_state(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    given.send(escrow_v1.HoldEscrow(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason="review"))
    given.send(escrow_v1.UnholdEscrow(escrow_id=str(escrow_id), actor=given.staff_actor(staff), reason="cleared"))
    given.send(escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=given.user(seller), reason="out of stock"))
    given.refunded(escrow_id)

    assert states(escrow_id)[3:] == [
        ("EscrowPutOnHold", "FUNDS_HELD"),
        ("EscrowHoldLifted", "FUNDS_HELD"),
        ("EscrowRefundRequested", "REFUNDING"),
        ("EscrowCancelled", "REFUNDING"),
        ("EscrowRefunded", "REFUNDED"),
    ]


def test_the_outbox_carries_the_same_state_as_the_log(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("RELEASED", buyer=buyer, seller=seller, staff=staff)
    rows = OutboxMessage.objects.filter(aggregate_id=str(escrow_id), type__startswith="escrow.v1.Escrow")
    published = [(row.type.rpartition(".")[2], decode(row.type, row.payload).state) for row in rows.order_by("id")]
    assert published == states(escrow_id)
    assert published[-1] == ("EscrowReleased", "RELEASED")
