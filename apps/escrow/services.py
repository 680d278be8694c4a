"""The escrow state machine: one function per transition, each owning its transaction.

Every transition locks the escrow (see `lock_objects`), checks its guard, changes state, appends its
`EscrowEvent` rows and the outbox rows for every event and outbound command, all in one transaction.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import betterproto2
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apps.core.public import money
from apps.escrow.errors import EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed
from apps.escrow.lock_objects import escrow_lock
from apps.escrow.models import Escrow, EscrowEvent, EscrowState, ProcessedCommand
from apps.outbox import context
from apps.outbox.messages import deterministic_id, type_name
from apps.outbox.publish import outbox_append
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1

S = EscrowState

BUYER, SELLER, STAFF, TIMER, SYSTEM = "buyer", "seller", "staff", "timer", "system"
# A party is also the deal's creator or its counterparty (the one who accepts or declines).
CREATOR, COUNTERPARTY = "creator", "counterparty"

# Ops holds (docs/architecture.md): wherever a decision or a money movement is still ahead; a settled escrow
# has nothing left to freeze.
_HOLDABLE = (S.AWAIT_ACCEPTANCE, S.AWAIT_FUNDS, S.FUNDS_HELD, S.DELIVERED, S.DISPUTED, S.RELEASING, S.REFUNDING)

# Who may send which command in which state (DESIGN.md, "Escrow state machine").
RULES: dict[str, dict[str, frozenset[str]]] = {
    "AcceptEscrow": {S.AWAIT_ACCEPTANCE: frozenset({COUNTERPARTY})},
    "DeclineEscrow": {S.AWAIT_ACCEPTANCE: frozenset({COUNTERPARTY})},
    "MarkDelivered": {S.FUNDS_HELD: frozenset({SELLER})},
    "ReleaseFunds": {S.DELIVERED: frozenset({BUYER, STAFF, TIMER})},
    "CancelEscrow": {
        # Before acceptance the counterparty declines instead (DeclineEscrow says who walked away).
        S.AWAIT_ACCEPTANCE: frozenset({CREATOR, STAFF, TIMER}),
        S.AWAIT_FUNDS: frozenset({BUYER, SELLER, STAFF, TIMER}),
        S.FUNDS_HELD: frozenset({SELLER, STAFF}),
    },
    "OpenDispute": {
        S.FUNDS_HELD: frozenset({BUYER, SELLER}),
        S.DELIVERED: frozenset({BUYER, SELLER}),
    },
    "ResolveDispute": {S.DISPUTED: frozenset({STAFF})},
    "HoldEscrow": {state: frozenset({STAFF}) for state in _HOLDABLE},
    "UnholdEscrow": {state: frozenset({STAFF}) for state in _HOLDABLE},
    # A stranded-funds refund can fail in a settled state too, so retries are allowed there.
    "RetryPayout": {
        state: frozenset({STAFF}) for state in (S.RELEASING, S.REFUNDING, S.RELEASED, S.CANCELLED, S.REFUNDED)
    },
    "ReturnStrandedFunds": {state: frozenset({STAFF}) for state in (S.RELEASED, S.CANCELLED, S.REFUNDED)},
    # Ending a compliance hold after review: staff only, in any state that can still hold money.
    "ResolveComplianceHold": {
        state: frozenset({STAFF})
        for state in (S.AWAIT_FUNDS, S.FUNDS_HELD, S.DELIVERED, S.RELEASING, S.REFUNDING, S.DISPUTED)
    },
}

# A screening block (EscrowComplianceHold) marks the escrow with this attention. While it is set no command
# may move or give up the money (a cancel would let tainted USDC stay in custody unaccounted for), and the
# timers skip the escrow; only ResolveComplianceHold ends it.
COMPLIANCE_HOLD = "compliance_hold"
BLOCKED_BY_COMPLIANCE_HOLD = frozenset({"ReleaseFunds", "CancelEscrow", "ResolveDispute"})


@dataclass(frozen=True)
class CommandResult:
    command_id: uuid.UUID
    escrow_id: uuid.UUID
    state: str
    version: int
    duplicate: bool = False


def fee_for(gross_minor: int, fee_bps: int) -> int:
    """The platform fee on a seller's gross share, rounded down to the minor unit."""
    return gross_minor * fee_bps // 10_000


# --- plumbing ---------------------------------------------------------------------------------------


def _role(escrow: Escrow, actor: Actor | None) -> str:
    if actor is None or actor.kind == ActorKind.UNSPECIFIED:
        raise InvalidCommand("the command has no actor", field="actor")
    if actor.kind == ActorKind.STAFF:
        return STAFF
    if actor.kind == ActorKind.TIMER:
        return TIMER
    if actor.kind == ActorKind.SYSTEM:
        return SYSTEM
    if actor.user_id == escrow.buyer_id:
        return BUYER
    if actor.user_id == escrow.seller_id:
        return SELLER
    # A stranger learns nothing about someone else's escrow, not even that it exists.
    raise EscrowNotFound("no such escrow")


def _roles(escrow: Escrow, role: str) -> frozenset[str]:
    """A party's role (buyer / seller) and its side of the deal (creator / counterparty)."""
    if role == BUYER:
        return frozenset({BUYER, CREATOR if escrow.creator_role == BUYER else COUNTERPARTY})
    if role == SELLER:
        return frozenset({SELLER, CREATOR if escrow.creator_role == SELLER else COUNTERPARTY})
    return frozenset({role})


def _authorize(escrow: Escrow, command: str, role: str) -> None:
    rules = RULES[command]
    roles = _roles(escrow, role)
    if not roles & frozenset().union(*rules.values()):
        raise NotAllowed(f"the {_describe(roles)} cannot send {command}", state=escrow.state)
    if escrow.state not in rules:
        raise InvalidTransition(f"{command} is not allowed in state {escrow.state}", state=escrow.state)
    if not roles & rules[escrow.state]:
        allowed = ", ".join(sorted(rules[escrow.state]))
        raise NotAllowed(f"in state {escrow.state} only the {allowed} can send {command}", state=escrow.state)


def _describe(roles: frozenset[str]) -> str:
    # "the buyer (creator)" reads better than a set.
    main = next((r for r in (BUYER, SELLER) if r in roles), None)
    side = next((r for r in (CREATOR, COUNTERPARTY) if r in roles), None)
    if main and side:
        return f"{main} ({'who created the deal' if side == CREATOR else 'counterparty'})"
    return next(iter(roles))


def _emit(
    escrow: Escrow, event: betterproto2.Message, *, actor: Actor | None = None, command_id: uuid.UUID | None = None
) -> None:
    escrow.version += 1
    name = type_name(event)
    event_id = deterministic_id(escrow.id, escrow.version, name)
    now = timezone.now()
    trace = context.current()
    causation = str(command_id) if command_id else trace.causation_id
    EscrowEvent.objects.create(
        escrow=escrow,
        version=escrow.version,
        event_id=event_id,
        type=name,
        payload=bytes(event),
        data=event.to_dict(casing=betterproto2.Casing.SNAKE),
        actor_kind=_actor_kind(actor),
        actor_id=actor.user_id if actor is not None and actor.user_id else None,
        command_id=command_id,
        causation_id=causation,
        correlation_id=trace.correlation_id,
        occurred_at=now,
    )
    outbox_append(
        message=event,
        aggregate_id=str(escrow.id),
        aggregate_version=escrow.version,
        event_id=event_id,
        causation_id=causation,
        occurred_at=now,
    )


def _actor_kind(actor: Actor | None) -> str:
    if actor is None:
        return SYSTEM
    return {ActorKind.USER: "user", ActorKind.STAFF: STAFF, ActorKind.TIMER: TIMER}.get(actor.kind, SYSTEM)


def _send(escrow: Escrow, command: betterproto2.Message, *, command_id: uuid.UUID | None = None) -> None:
    """An outbound command to another service, in the same transaction as the event that caused it."""
    outbox_append(
        message=command,
        aggregate_id=str(escrow.id),
        aggregate_version=escrow.version,
        event_id=deterministic_id(escrow.id, escrow.version, type_name(command)),
        causation_id=str(command_id) if command_id else "",
    )


def _result(escrow: Escrow, command_id: uuid.UUID, *, duplicate: bool = False) -> CommandResult:
    return CommandResult(command_id, escrow.id, escrow.state, escrow.version, duplicate)


def _run_command(
    *,
    command: betterproto2.Message,
    command_id: uuid.UUID,
    escrow_id: uuid.UUID,
    apply: Callable[[Escrow], None],
) -> CommandResult:
    """The shared shape of a command on an existing escrow: lock, dedupe, guard, change, record."""
    with transaction.atomic():
        escrow = escrow_lock(escrow_id)
        if escrow is None:
            raise EscrowNotFound("no such escrow")
        name = type(command).__name__
        role = _role(escrow, command.actor)
        if _already_applied(escrow, command, command_id):
            return _result(escrow, command_id, duplicate=True)
        _authorize(escrow, name, role)
        if escrow.on_hold_since is not None and name != "UnholdEscrow":
            # Frozen for an investigation: nothing moves (no release, refund, retry, timer) until ops lift it.
            raise InvalidTransition(f"the escrow is on hold; {name} waits until the hold is lifted", state=escrow.state)
        if escrow.attention == COMPLIANCE_HOLD and name in BLOCKED_BY_COMPLIANCE_HOLD:
            raise InvalidTransition(f"{name} is not allowed while the escrow is on compliance hold", state=escrow.state)
        apply(escrow)
        escrow.save()
        _record_command(escrow, command, command_id)
        return _result(escrow, command_id)


def _already_applied(escrow: Escrow, command: betterproto2.Message, command_id: uuid.UUID) -> bool:
    """True for a retry of a command already applied to this escrow. A command id already spent on another
    escrow or command type is refused: answering "duplicate" there would report an effect that never
    happened."""
    applied = ProcessedCommand.objects.filter(command_id=command_id).first()
    if applied is None:
        return False
    if applied.escrow_id != escrow.id or applied.type != type_name(command):
        raise InvalidCommand("this command id was already used for another command", field="command_id")
    return True


def command_applied(command_id: uuid.UUID) -> bool:
    """Whether a command with this id was ever applied (the record is kept for good)."""
    return ProcessedCommand.objects.filter(command_id=command_id).exists()


def _record_command(escrow: Escrow, command: betterproto2.Message, command_id: uuid.UUID) -> None:
    ProcessedCommand.objects.create(command_id=command_id, escrow_id=escrow.id, type=type_name(command))
    # The accepted command itself, for the escrow.commands.v1 topic (an escrow process consuming from
    # Kafka dedupes it by its id).
    outbox_append(
        message=command,
        aggregate_id=str(escrow.id),
        aggregate_version=escrow.version,
        event_id=command_id,
    )


def _parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise EscrowNotFound("no such escrow") from None


# --- commands -----------------------------------------------------------------------------------------


def escrow_create(*, command: escrow_v1.CreateEscrow, command_id: uuid.UUID) -> CommandResult:
    escrow_id = _parse_id(command.escrow_id)
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
    with transaction.atomic():
        existing = escrow_lock(escrow_id)
        if existing is not None:
            if _already_applied(existing, command, command_id):
                return _result(existing, command_id, duplicate=True)
            raise InvalidCommand("an escrow with this id exists", field="escrow_id")
        now = timezone.now()
        escrow = Escrow.objects.create(
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
        _emit(
            escrow,
            escrow_v1.EscrowCreated(
                escrow_id=str(escrow.id),
                buyer_id=escrow.buyer_id,
                seller_id=escrow.seller_id,
                amount=money(escrow.amount_minor, escrow.currency),
                description=escrow.description,
                inspection_period_hours=hours,
                actor=command.actor,
                created_by_id=command.actor.user_id,
                acceptance_deadline=escrow.acceptance_deadline,
            ),
            actor=command.actor,
            command_id=command_id,
        )
        # Nobody is asked to pay before both parties agreed: the payment intent waits for AcceptEscrow.
        escrow.save(update_fields=["version", "updated_at"])
        _record_command(escrow, command, command_id)
        return _result(escrow, command_id)


def escrow_accept(*, command: escrow_v1.AcceptEscrow, command_id: uuid.UUID) -> CommandResult:
    """The counterparty agrees to the terms: the funding clock starts and payments sets up the payment."""

    def apply(escrow: Escrow) -> None:
        escrow.state = S.AWAIT_FUNDS
        escrow.funding_deadline = timezone.now() + datetime.timedelta(hours=settings.FUNDING_DEADLINE_HOURS)
        _emit(
            escrow,
            escrow_v1.EscrowAccepted(
                escrow_id=str(escrow.id), actor=command.actor, funding_deadline=escrow.funding_deadline
            ),
            actor=command.actor,
            command_id=command_id,
        )
        _send(
            escrow,
            payments_v1.CreatePaymentIntent(
                escrow_id=str(escrow.id),
                buyer_id=escrow.buyer_id,
                seller_id=escrow.seller_id,
                amount=money(escrow.amount_minor, escrow.currency),
            ),
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_decline(*, command: escrow_v1.DeclineEscrow, command_id: uuid.UUID) -> CommandResult:
    """The counterparty turns the deal down. Nothing was paid (no payment was even set up)."""

    def apply(escrow: Escrow) -> None:
        escrow.state = S.CANCELLED
        _emit(
            escrow,
            escrow_v1.EscrowDeclined(escrow_id=str(escrow.id), actor=command.actor, reason=command.reason[:1000]),
            actor=command.actor,
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_mark_delivered(*, command: escrow_v1.MarkDelivered, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        escrow.state = S.DELIVERED
        escrow.inspection_deadline = timezone.now() + datetime.timedelta(hours=escrow.inspection_period_hours)
        _emit(
            escrow,
            escrow_v1.EscrowDelivered(
                escrow_id=str(escrow.id), inspection_deadline=escrow.inspection_deadline, actor=command.actor
            ),
            actor=command.actor,
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_release(*, command: escrow_v1.ReleaseFunds, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        if command.actor.kind == ActorKind.TIMER and not _lapsed(escrow.inspection_deadline):
            raise InvalidTransition("the inspection period has not lapsed", state=escrow.state)
        _request_payout(escrow, gross_minor=escrow.amount_minor, actor=command.actor, command_id=command_id)
        escrow.state = S.RELEASING

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_cancel(*, command: escrow_v1.CancelEscrow, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        if command.actor.kind == ActorKind.TIMER:
            if escrow.state == S.AWAIT_ACCEPTANCE and not _lapsed(escrow.acceptance_deadline):
                raise InvalidTransition("the acceptance deadline has not passed", state=escrow.state)
            if escrow.state == S.AWAIT_FUNDS and not _lapsed(escrow.funding_deadline):
                raise InvalidTransition("the funding deadline has not passed", state=escrow.state)
        if escrow.held_minor > 0:
            # Funds (or a mismatched payment) are held: cancelling means giving them back.
            _request_refund(escrow, amount_minor=escrow.held_minor, actor=command.actor, command_id=command_id)
            escrow.state = S.REFUNDING
        else:
            escrow.state = S.CANCELLED
        _emit(
            escrow,
            escrow_v1.EscrowCancelled(escrow_id=str(escrow.id), actor=command.actor, reason=command.reason),
            actor=command.actor,
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_open_dispute(*, command: escrow_v1.OpenDispute, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        if not command.reason.strip():
            raise InvalidCommand("a dispute needs a reason", field="reason")
        escrow.state = S.DISPUTED
        escrow.dispute_reason = command.reason
        _emit(
            escrow,
            escrow_v1.EscrowDisputed(escrow_id=str(escrow.id), actor=command.actor, reason=command.reason),
            actor=command.actor,
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


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
        _emit(
            escrow,
            escrow_v1.EscrowDisputeResolved(
                escrow_id=str(escrow.id),
                actor=command.actor,
                outcome=outcome,
                seller_amount=money(seller_gross, escrow.currency),
                buyer_amount=money(buyer_amount, escrow.currency),
                note=command.note,
            ),
            actor=command.actor,
            command_id=command_id,
        )
        if seller_gross:
            _request_payout(escrow, gross_minor=seller_gross, actor=command.actor, command_id=command_id)
        if buyer_amount:
            _request_refund(escrow, amount_minor=buyer_amount, actor=command.actor, command_id=command_id)
        escrow.state = S.RELEASING if seller_gross else S.REFUNDING

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_resolve_compliance_hold(*, command: escrow_v1.ResolveComplianceHold, command_id: uuid.UUID) -> CommandResult:
    """Staff end a compliance hold after review. LIFT: the wallet is cleared; the escrow carries on (a
    deposit screening blocked is then accepted by payments, and the funding clock restarts because it was
    stopped). REFUND: what the escrow holds goes back to the buyer, screened again on the way out. A blocked
    deposit that was never counted (AWAIT_FUNDS, nothing held) cannot be refunded here: sanctioned funds
    stay frozen in custody until compliance reports them."""

    def apply(escrow: Escrow) -> None:
        if escrow.attention != COMPLIANCE_HOLD:
            raise InvalidTransition("the escrow is not on compliance hold", state=escrow.state)
        if not command.note.strip():
            raise InvalidCommand("say what the review found", field="note")
        decision = command.decision
        if decision not in (escrow_v1.ComplianceDecision.LIFT, escrow_v1.ComplianceDecision.REFUND):
            raise InvalidCommand("decision must be lift or refund", field="decision")
        restarted = None
        if decision == escrow_v1.ComplianceDecision.LIFT and escrow.state == S.AWAIT_FUNDS:
            fresh = timezone.now() + datetime.timedelta(hours=settings.FUNDING_DEADLINE_HOURS)
            # AWAIT_FUNDS always has a funding deadline (set on acceptance).
            restarted = escrow.funding_deadline = max(escrow.funding_deadline or fresh, fresh)
        escrow.attention = ""
        escrow.attention_detail = ""
        if (
            decision == escrow_v1.ComplianceDecision.LIFT
            and escrow.state == S.REFUNDING
            and escrow.pending_refund_minor
        ):
            # The refund screening blocked was never sent and nothing keeps it: ops send it again (screened
            # again on the way out), so the escrow stays in front of them instead of waiting silently.
            escrow.attention = "refund_failed"
            escrow.attention_detail = (
                "the refund screening blocked before this lift was not sent: retry it (it is screened again)"
            )
        _emit(
            escrow,
            escrow_v1.EscrowComplianceHoldResolved(
                escrow_id=str(escrow.id),
                actor=command.actor,
                decision=decision,
                note=command.note,
                funding_deadline=restarted,
            ),
            actor=command.actor,
            command_id=command_id,
        )
        if decision == escrow_v1.ComplianceDecision.REFUND:
            _refund_after_review(escrow, actor=command.actor, command_id=command_id)

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def _refund_after_review(escrow: Escrow, *, actor: Actor, command_id: uuid.UUID) -> None:
    if escrow.held_minor == 0:
        raise InvalidTransition(
            "nothing is held for this escrow: a blocked deposit stays frozen in custody", state=escrow.state
        )
    if escrow.pending_refund_minor:
        raise InvalidTransition("a refund is already pending", state=escrow.state)
    # A payout that screening blocked never left (TransferFailed): the buyer gets the funds back instead.
    escrow.pending_payout_minor = 0
    _request_refund(escrow, amount_minor=escrow.held_minor, actor=actor, command_id=command_id)
    escrow.state = S.REFUNDING


def _lapsed(deadline: datetime.datetime | None) -> bool:
    return deadline is not None and deadline <= timezone.now()


def _request_payout(escrow: Escrow, *, gross_minor: int, actor: Actor, command_id: uuid.UUID) -> None:
    fee = fee_for(gross_minor, escrow.fee_bps)
    escrow.pending_payout_minor = gross_minor
    _emit(
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
    _send(
        escrow,
        payments_v1.TransferToSeller(
            escrow_id=str(escrow.id),
            seller_id=escrow.seller_id,
            amount=money(gross_minor - fee, escrow.currency),
            fee=money(fee, escrow.currency),
        ),
        command_id=command_id,
    )


def _request_refund(escrow: Escrow, *, amount_minor: int, actor: Actor, command_id: uuid.UUID) -> None:
    escrow.pending_refund_minor = amount_minor
    _emit(
        escrow,
        escrow_v1.EscrowRefundRequested(
            escrow_id=str(escrow.id), amount=money(amount_minor, escrow.currency), actor=actor
        ),
        actor=actor,
        command_id=command_id,
    )
    _send(
        escrow,
        payments_v1.InitiateRefund(
            escrow_id=str(escrow.id), buyer_id=escrow.buyer_id, amount=money(amount_minor, escrow.currency)
        ),
        command_id=command_id,
    )


# --- reactions to payments events (called by the escrow subscriber, inside its transaction) -----------


def _needs_attention(escrow: Escrow, reason: str, detail: str, received: Money | None = None) -> None:
    # A compliance hold outranks any later attention: only ResolveComplianceHold may clear it. The
    # EscrowNeedsAttention event below still tells ops about the new matter.
    if escrow.attention != COMPLIANCE_HOLD:
        escrow.attention = reason
        escrow.attention_detail = detail[:1000]
    _emit(
        escrow,
        escrow_v1.EscrowNeedsAttention(escrow_id=str(escrow.id), reason=reason, detail=detail, received=received),
    )


def escrow_record_payment(*, event: payments_v1.PaymentSucceeded) -> None:
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    paid = event.amount or Money()
    if paid.currency != escrow.currency:
        # Money in another currency cannot be counted in this escrow's books: ops handle it.
        _needs_attention(
            escrow,
            "payment_currency_mismatch",
            f"received {paid.amount_minor} {paid.currency} ({event.provider_payment_id})",
            paid,
        )
        escrow.save()
        return
    # Whatever happens next, the money is with us now and is held until someone decides.
    escrow.received_minor += paid.amount_minor
    escrow.held_minor += paid.amount_minor
    if escrow.state == S.AWAIT_FUNDS and paid.amount_minor == escrow.amount_minor:
        escrow.state = S.FUNDS_HELD
        _emit(
            escrow,
            escrow_v1.EscrowFundsHeld(
                escrow_id=str(escrow.id), amount=paid, provider_payment_id=event.provider_payment_id
            ),
        )
    elif escrow.state == S.AWAIT_FUNDS:
        _needs_attention(
            escrow,
            "payment_amount_mismatch",
            f"expected {escrow.amount_minor}, received {paid.amount_minor} ({event.provider_payment_id})",
            paid,
        )
    else:
        _needs_attention(
            escrow, "unexpected_payment", f"payment {event.provider_payment_id} arrived in state {escrow.state}", paid
        )
    escrow.save()


def escrow_record_transfer(*, event: payments_v1.TransferSucceeded) -> None:
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    net = (event.amount or Money()).amount_minor
    fee = (event.fee or Money()).amount_minor
    if escrow.pending_payout_minor == 0 or net + fee != escrow.pending_payout_minor:
        _needs_attention(
            escrow,
            "unexpected_transfer",
            f"transfer {event.provider_transfer_id} of {net}+{fee} does not match "
            f"pending payout {escrow.pending_payout_minor}",
        )
        escrow.save()
        return
    escrow.held_minor -= net + fee
    escrow.paid_out_minor += net
    escrow.fee_minor += fee
    escrow.pending_payout_minor = 0
    _emit(
        escrow,
        escrow_v1.EscrowReleased(
            escrow_id=str(escrow.id),
            paid_to_seller=money(net, escrow.currency),
            fee=money(fee, escrow.currency),
        ),
    )
    _settle_if_done(escrow)
    escrow.save()


def escrow_record_refund(*, event: payments_v1.RefundSucceeded) -> None:
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    amount = (event.amount or Money()).amount_minor
    if escrow.pending_refund_minor == 0 or amount != escrow.pending_refund_minor:
        _needs_attention(
            escrow,
            "unexpected_refund",
            f"refund {event.provider_refund_id} of {amount} does not match "
            f"pending refund {escrow.pending_refund_minor}",
        )
        escrow.save()
        return
    escrow.held_minor -= amount
    escrow.refunded_minor += amount
    escrow.pending_refund_minor = 0
    _emit(escrow, escrow_v1.EscrowRefunded(escrow_id=str(escrow.id), amount=money(amount, escrow.currency)))
    _settle_if_done(escrow)
    escrow.save()


def _settle_if_done(escrow: Escrow) -> None:
    """A release or refund (or both legs of a split) finished: the escrow reaches its final state."""
    if escrow.pending_payout_minor or escrow.pending_refund_minor:
        return
    if escrow.state not in (S.RELEASING, S.REFUNDING):
        # A stranded-funds refund finishing in a settled state changes no state.
        return
    escrow.state = S.RELEASED if escrow.paid_out_minor else S.REFUNDED
    if escrow.attention in {"transfer_failed", "refund_failed"}:
        escrow.attention = ""
        escrow.attention_detail = ""


def escrow_record_payout_failure(*, escrow_id: str, reason: str, detail: str) -> None:
    escrow = escrow_lock(escrow_id)
    if escrow is None:
        return
    _needs_attention(escrow, reason, detail)
    escrow.save()


def escrow_record_screening_block(*, event: payments_v1.WalletScreened) -> None:
    """A wallet failed sanctions / risk screening: payments moved nothing; the escrow stays where it is,
    on compliance hold, until ops decide."""
    if event.allowed:
        return
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    escrow.attention = COMPLIANCE_HOLD
    escrow.attention_detail = f"{event.address}: {event.reason}"[:1000]
    _emit(escrow, escrow_v1.EscrowComplianceHold(escrow_id=str(escrow.id), reason=event.reason))
    escrow.save()


def escrow_record_chargeback(*, event: payments_v1.ChargebackOpened) -> None:
    """A card chargeback: no payout may go out. Funds still held are frozen in a dispute for ops."""
    escrow = escrow_lock(event.escrow_id)
    if escrow is None:
        return
    if escrow.state in (S.FUNDS_HELD, S.DELIVERED):
        escrow.state = S.DISPUTED
        escrow.dispute_reason = f"chargeback: {event.reason}"
        system = Actor(kind=ActorKind.SYSTEM)
        _emit(
            escrow,
            escrow_v1.EscrowDisputed(escrow_id=str(escrow.id), actor=system, reason=escrow.dispute_reason),
            actor=system,
        )
    _needs_attention(escrow, "chargeback", f"{event.provider_dispute_id}: {event.reason}")
    escrow.save()


# --- ops commands (staff) ---------------------------------------------------------------------------------


def _require_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidCommand("staff commands need a reason", field="reason")
    return reason[:1000]


def escrow_hold(*, command: escrow_v1.HoldEscrow, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        reason = _require_reason(command.reason)
        escrow.on_hold_since = timezone.now()
        _emit(
            escrow,
            escrow_v1.EscrowPutOnHold(escrow_id=str(escrow.id), actor=command.actor, reason=reason),
            actor=command.actor,
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_unhold(*, command: escrow_v1.UnholdEscrow, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        reason = _require_reason(command.reason)
        if escrow.on_hold_since is None:
            raise InvalidTransition("the escrow is not on hold", state=escrow.state)
        # Timers stopped while held: the running deadline moves on by the time on hold, so lifting a hold
        # never fires a timer that lapsed during the investigation.
        frozen_for = timezone.now() - escrow.on_hold_since
        funding = inspection = acceptance = None
        if escrow.state == S.AWAIT_ACCEPTANCE and escrow.acceptance_deadline is not None:
            escrow.acceptance_deadline += frozen_for
            acceptance = escrow.acceptance_deadline
        if escrow.state == S.AWAIT_FUNDS and escrow.funding_deadline is not None:
            escrow.funding_deadline += frozen_for
            funding = escrow.funding_deadline
        if escrow.state == S.DELIVERED and escrow.inspection_deadline is not None:
            escrow.inspection_deadline += frozen_for
            inspection = escrow.inspection_deadline
        escrow.on_hold_since = None
        _emit(
            escrow,
            escrow_v1.EscrowHoldLifted(
                escrow_id=str(escrow.id),
                actor=command.actor,
                reason=reason,
                funding_deadline=funding,
                inspection_deadline=inspection,
                acceptance_deadline=acceptance,
            ),
            actor=command.actor,
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def escrow_retry_payout(*, command: escrow_v1.RetryPayout, command_id: uuid.UUID) -> CommandResult:
    """Sends the pending transfer or refund again, only after its last attempt is known failed. The new
    payments command's id comes from the escrow's next version, so the provider sees a new idempotency
    key (the old key would only replay the failure), and a repeat of this command is a duplicate."""

    def apply(escrow: Escrow) -> None:
        reason = _require_reason(command.reason)
        if escrow.attention == "transfer_failed" and escrow.pending_payout_minor > 0:
            if "awaiting payout destination" in escrow.attention_detail:
                # Parked, not failed: payments sends it with its original key once the seller registers a
                # destination; a second send now could pay twice.
                raise InvalidTransition(
                    "the transfer is waiting for the seller's payout destination", state=escrow.state
                )
            leg, amount = "transfer", escrow.pending_payout_minor
        elif escrow.attention == "refund_failed" and escrow.pending_refund_minor > 0:
            leg, amount = "refund", escrow.pending_refund_minor
        else:
            raise InvalidTransition("there is no failed transfer or refund to retry", state=escrow.state)
        escrow.attention = ""
        escrow.attention_detail = ""
        _emit(
            escrow,
            escrow_v1.EscrowPayoutRetried(
                escrow_id=str(escrow.id),
                actor=command.actor,
                reason=reason,
                leg=leg,
                amount=money(amount, escrow.currency),
            ),
            actor=command.actor,
            command_id=command_id,
        )
        if leg == "transfer":
            fee = fee_for(amount, escrow.fee_bps)
            _send(
                escrow,
                payments_v1.TransferToSeller(
                    escrow_id=str(escrow.id),
                    seller_id=escrow.seller_id,
                    amount=money(amount - fee, escrow.currency),
                    fee=money(fee, escrow.currency),
                ),
                command_id=command_id,
            )
        else:
            _send(
                escrow,
                payments_v1.InitiateRefund(
                    escrow_id=str(escrow.id),
                    buyer_id=escrow.buyer_id,
                    amount=money(amount, escrow.currency),
                ),
                command_id=command_id,
            )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


def stranded_minor(escrow: Escrow) -> int:
    """Money a settled escrow holds that nobody has asked payments to move: it owes nothing any more."""
    if escrow.state not in (S.RELEASED, S.CANCELLED, S.REFUNDED):
        return 0
    return escrow.held_minor - escrow.pending_payout_minor - escrow.pending_refund_minor


def escrow_return_stranded_funds(*, command: escrow_v1.ReturnStrandedFunds, command_id: uuid.UUID) -> CommandResult:
    """Refunds a late or mismatched payment held by a settled escrow. The refund is booked like any other
    (pending, then EscrowRefunded moves it from held to refunded), so the money invariant holds throughout."""

    def apply(escrow: Escrow) -> None:
        reason = _require_reason(command.reason)
        if escrow.pending_refund_minor:
            raise InvalidTransition("a refund is already pending for this escrow", state=escrow.state)
        amount = stranded_minor(escrow)
        if amount <= 0:
            raise InvalidTransition("the escrow holds no stranded money", state=escrow.state)
        escrow.pending_refund_minor = amount
        if escrow.attention in {"unexpected_payment", "payment_amount_mismatch"}:
            escrow.attention = ""
            escrow.attention_detail = ""
        _emit(
            escrow,
            escrow_v1.EscrowStrandedFundsReturnRequested(
                escrow_id=str(escrow.id),
                actor=command.actor,
                reason=reason,
                amount=money(amount, escrow.currency),
            ),
            actor=command.actor,
            command_id=command_id,
        )
        _send(
            escrow,
            payments_v1.InitiateRefund(
                escrow_id=str(escrow.id),
                buyer_id=escrow.buyer_id,
                amount=money(amount, escrow.currency),
            ),
            command_id=command_id,
        )

    return _run_command(command=command, command_id=command_id, escrow_id=_parse_id(command.escrow_id), apply=apply)


# --- dispatch ---------------------------------------------------------------------------------------------

_COMMANDS: dict[type[betterproto2.Message], Callable[..., CommandResult]] = {
    escrow_v1.CreateEscrow: escrow_create,
    escrow_v1.AcceptEscrow: escrow_accept,
    escrow_v1.DeclineEscrow: escrow_decline,
    escrow_v1.MarkDelivered: escrow_mark_delivered,
    escrow_v1.ReleaseFunds: escrow_release,
    escrow_v1.CancelEscrow: escrow_cancel,
    escrow_v1.OpenDispute: escrow_open_dispute,
    escrow_v1.ResolveDispute: escrow_resolve_dispute,
    escrow_v1.HoldEscrow: escrow_hold,
    escrow_v1.UnholdEscrow: escrow_unhold,
    escrow_v1.RetryPayout: escrow_retry_payout,
    escrow_v1.ReturnStrandedFunds: escrow_return_stranded_funds,
    escrow_v1.ResolveComplianceHold: escrow_resolve_compliance_hold,
}


def dispatch(command: betterproto2.Message, *, command_id: uuid.UUID) -> CommandResult:
    """The one entry point for escrow commands: the gateway, the admin, the timers and a Kafka command
    consumer all call this."""
    try:
        handler = _COMMANDS[type(command)]
    except KeyError:
        raise InvalidCommand(f"unknown command {type(command).__name__}", field="type") from None
    return handler(command=command, command_id=command_id)
