"""The people's commands on an escrow (and staff resolving a dispute): one function per transition, each
owning its transaction through `runner.run_command` (lock, dedupe, `rules.command_check`, change, record).

Every transition sets its new state first, then appends its `EscrowEvent` rows and the outbox rows for
every event and outbound command (`emit`; each event carries that state) in that one transaction. Staff
ops commands are in `ops`; reactions to payments in `reactions`.
"""

from __future__ import annotations

import datetime
import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apps.core.public import money
from apps.escrow.emit import emit, send
from apps.escrow.errors import InvalidCommand, InvalidTransition
from apps.escrow.lock_objects import escrow_lock
from apps.escrow.models import Escrow
from apps.escrow.rules import BUYER, SELLER, S, fee_for, lapsed
from apps.escrow.runner import (
    CommandResult,
    already_applied,
    append_command,
    claim_command,
    parse_id,
    result,
    run_command,
)
from apps.outbox.public import batched_appends
from proto.common.v1 import Actor, ActorKind
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1


def escrow_create(*, command: escrow_v1.CreateEscrow, command_id: uuid.UUID) -> CommandResult:
    escrow_id = parse_id(command.escrow_id)
    amount = command.amount
    if amount is None or amount.amount_minor <= 0:
        raise InvalidCommand("amount must be positive", field="amount")
    if command.buyer_id == command.seller_id:
        raise InvalidCommand("buyer and seller must be different users", field="counterparty")
    if command.actor is None or command.actor.kind != ActorKind.USER or not command.actor.user_id:
        raise InvalidCommand("a deal is created by its buyer or its seller", field="actor")
    if command.actor.user_id == command.buyer_id:
        creator_role = BUYER
    elif command.actor.user_id == command.seller_id:
        creator_role = SELLER
    else:
        raise InvalidCommand("a deal is created by its buyer or its seller", field="actor")
    users = get_user_model().objects.filter(pk__in=[command.buyer_id, command.seller_id], is_active=True)
    if users.count() != 2:
        raise InvalidCommand("the counterparty is not an active user", field="counterparty")
    hours = command.inspection_period_hours or settings.INSPECTION_PERIOD_HOURS
    with transaction.atomic(), batched_appends():
        existing = escrow_lock(escrow_id)
        if existing is not None:
            if already_applied(existing, command, command_id):
                return result(existing, command_id, duplicate=True)
            raise InvalidCommand("an escrow with this id exists", field="escrow_id")
        now = timezone.now()
        escrow = Escrow(
            id=escrow_id,
            buyer_id=command.buyer_id,
            seller_id=command.seller_id,
            amount_minor=amount.amount_minor,
            currency=amount.currency,
            description=command.description,
            inspection_period_hours=hours,
            fee_bps=settings.PLATFORM_FEE_BPS,
            state=S.AWAIT_ACCEPTANCE,
            creator_role=creator_role,
            acceptance_deadline=now + datetime.timedelta(hours=settings.ACCEPTANCE_DEADLINE_HOURS),
            funding_deadline=None,
        )
        # Claimed as every command is (runner.claim_command): a command id already spent on another escrow
        # is refused here, not left to the primary key.
        if not claim_command(escrow, command, command_id):
            raise InvalidCommand("this command id was already used for another command", field="command_id")
        emit(
            escrow,
            escrow_v1.EscrowCreated(
                escrow_id=str(escrow.id),
                buyer_id=escrow.buyer_id,
                seller_id=escrow.seller_id,
                amount=money(escrow.amount_minor, escrow.currency),
                inspection_period_hours=hours,
                actor=command.actor,
                created_by_id=command.actor.user_id,
                acceptance_deadline=escrow.acceptance_deadline,
            ),
            actor=command.actor,
            command_id=command_id,
            text={"description": escrow.description},
        )
        # Nobody is asked to pay before both parties agreed: the payment intent waits for AcceptEscrow.
        # The escrow is inserted once, at the version its first event gave it (the event's foreign key is
        # checked at commit).
        escrow.save(force_insert=True)
        append_command(escrow, command, command_id)
        return result(escrow, command_id)


def escrow_accept(*, command: escrow_v1.AcceptEscrow, command_id: uuid.UUID) -> CommandResult:
    """The counterparty agrees to the terms: the funding clock starts and payments sets up the payment."""

    def apply(escrow: Escrow) -> None:
        escrow.state = S.AWAIT_FUNDS
        escrow.funding_deadline = timezone.now() + datetime.timedelta(hours=settings.FUNDING_DEADLINE_HOURS)
        emit(
            escrow,
            escrow_v1.EscrowAccepted(
                escrow_id=str(escrow.id), actor=command.actor, funding_deadline=escrow.funding_deadline
            ),
            actor=command.actor,
            command_id=command_id,
        )
        send(
            escrow,
            payments_v1.CreatePaymentIntent(
                escrow_id=str(escrow.id),
                buyer_id=escrow.buyer_id,
                seller_id=escrow.seller_id,
                amount=money(escrow.amount_minor, escrow.currency),
            ),
            command_id=command_id,
        )

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_decline(*, command: escrow_v1.DeclineEscrow, command_id: uuid.UUID) -> CommandResult:
    """The counterparty turns the deal down. Nothing was paid (no payment was even set up)."""

    def apply(escrow: Escrow) -> None:
        escrow.state = S.CANCELLED
        emit(
            escrow,
            escrow_v1.EscrowDeclined(escrow_id=str(escrow.id), actor=command.actor),
            actor=command.actor,
            command_id=command_id,
            text={"reason": command.reason[:1000]},
        )

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_mark_delivered(*, command: escrow_v1.MarkDelivered, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        escrow.state = S.DELIVERED
        escrow.inspection_deadline = timezone.now() + datetime.timedelta(hours=escrow.inspection_period_hours)
        emit(
            escrow,
            escrow_v1.EscrowDelivered(
                escrow_id=str(escrow.id), inspection_deadline=escrow.inspection_deadline, actor=command.actor
            ),
            actor=command.actor,
            command_id=command_id,
        )

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_release(*, command: escrow_v1.ReleaseFunds, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        if (
            command.actor is not None
            and command.actor.kind == ActorKind.TIMER
            and not lapsed(escrow.inspection_deadline, now=timezone.now())
        ):
            raise InvalidTransition("the inspection period has not lapsed", state=escrow.state)
        escrow.state = S.RELEASING
        request_payout(escrow, gross_minor=escrow.amount_minor, actor=command.actor, command_id=command_id)

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_cancel(*, command: escrow_v1.CancelEscrow, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        if command.actor is not None and command.actor.kind == ActorKind.TIMER:
            if escrow.state == S.AWAIT_ACCEPTANCE and not lapsed(escrow.acceptance_deadline, now=timezone.now()):
                raise InvalidTransition("the acceptance deadline has not passed", state=escrow.state)
            if escrow.state == S.AWAIT_FUNDS and not lapsed(escrow.funding_deadline, now=timezone.now()):
                raise InvalidTransition("the funding deadline has not passed", state=escrow.state)
        if escrow.held_minor > 0:
            # Funds (or a mismatched payment) are held: cancelling means giving them back.
            escrow.state = S.REFUNDING
            request_refund(escrow, amount_minor=escrow.held_minor, actor=command.actor, command_id=command_id)
        else:
            escrow.state = S.CANCELLED
        emit(
            escrow,
            escrow_v1.EscrowCancelled(escrow_id=str(escrow.id), actor=command.actor),
            actor=command.actor,
            command_id=command_id,
            text={"reason": command.reason},
        )

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_open_dispute(*, command: escrow_v1.OpenDispute, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        if not command.reason.strip():
            raise InvalidCommand("a dispute needs a reason", field="reason")
        escrow.state = S.DISPUTED
        escrow.dispute_reason = command.reason
        emit(
            escrow,
            escrow_v1.EscrowDisputed(escrow_id=str(escrow.id), actor=command.actor),
            actor=command.actor,
            command_id=command_id,
            text={"reason": command.reason},
        )

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_resolve_dispute(*, command: escrow_v1.ResolveDispute, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        outcome = command.outcome
        held = escrow.held_minor
        if outcome == escrow_v1.DisputeOutcome.RELEASE:
            seller_gross = escrow.amount_minor
        elif outcome == escrow_v1.DisputeOutcome.REFUND:
            seller_gross = 0
        elif outcome == escrow_v1.DisputeOutcome.SPLIT:
            share = command.seller_amount
            if share is None or share.currency != escrow.currency:
                raise InvalidCommand("seller_amount must be in the escrow's currency", field="seller_amount")
            if not 0 < share.amount_minor < escrow.amount_minor:
                raise InvalidCommand(
                    "seller_amount must be more than zero and less than the escrow amount", field="seller_amount"
                )
            seller_gross = share.amount_minor
        else:
            raise InvalidCommand("outcome must be release, refund or split", field="outcome")
        seller_gross = min(seller_gross, held)
        buyer_amount = held - seller_gross
        emit(
            escrow,
            escrow_v1.EscrowDisputeResolved(
                escrow_id=str(escrow.id),
                actor=command.actor,
                outcome=outcome,
                seller_amount=money(seller_gross, escrow.currency),
                buyer_amount=money(buyer_amount, escrow.currency),
            ),
            actor=command.actor,
            command_id=command_id,
            text={"note": command.note},
        )
        # A split stays RELEASING until both legs are confirmed.
        escrow.state = S.RELEASING if seller_gross else S.REFUNDING
        if seller_gross:
            request_payout(escrow, gross_minor=seller_gross, actor=command.actor, command_id=command_id)
        if buyer_amount:
            request_refund(escrow, amount_minor=buyer_amount, actor=command.actor, command_id=command_id)

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def request_payout(escrow: Escrow, *, gross_minor: int, actor: Actor | None, command_id: uuid.UUID) -> None:
    fee = fee_for(gross_minor, escrow.fee_bps)
    escrow.pending_payout_minor = gross_minor
    emit(
        escrow,
        escrow_v1.EscrowReleaseRequested(
            escrow_id=str(escrow.id),
            payout=money(gross_minor - fee, escrow.currency),
            fee=money(fee, escrow.currency),
            actor=actor,
        ),
        actor=actor,
        command_id=command_id,
    )
    send(
        escrow,
        payments_v1.TransferToSeller(
            escrow_id=str(escrow.id),
            seller_id=escrow.seller_id,
            amount=money(gross_minor - fee, escrow.currency),
            fee=money(fee, escrow.currency),
        ),
        command_id=command_id,
    )


def request_refund(escrow: Escrow, *, amount_minor: int, actor: Actor | None, command_id: uuid.UUID) -> None:
    escrow.pending_refund_minor = amount_minor
    emit(
        escrow,
        escrow_v1.EscrowRefundRequested(
            escrow_id=str(escrow.id), amount=money(amount_minor, escrow.currency), actor=actor
        ),
        actor=actor,
        command_id=command_id,
    )
    send_refund(escrow, amount_minor=amount_minor, command_id=command_id)


def send_refund(escrow: Escrow, *, amount_minor: int, command_id: uuid.UUID) -> None:
    """Asks payments to return `amount_minor` of what the escrow holds to the buyer."""
    send(
        escrow,
        payments_v1.InitiateRefund(
            escrow_id=str(escrow.id), buyer_id=escrow.buyer_id, amount=money(amount_minor, escrow.currency)
        ),
        command_id=command_id,
    )
