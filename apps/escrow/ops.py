"""Staff ops commands (reason required): hold and unhold, retrying a failed transfer or refund, returning
stranded funds, and ending a compliance hold after review. Same shape as `commands` (`runner.run_command`)."""

from __future__ import annotations

import datetime
import uuid

from django.conf import settings
from django.utils import timezone

from apps.core.public import money
from apps.escrow.commands import request_refund, send_refund
from apps.escrow.emit import emit, send
from apps.escrow.errors import InvalidCommand, InvalidTransition
from apps.escrow.models import Escrow
from apps.escrow.rules import COMPLIANCE_HOLD, S, fee_for, stranded_minor
from apps.escrow.runner import CommandResult, parse_id, require_reason, run_command
from proto.common.v1 import Actor
from proto.escrow import v1 as escrow_v1
from proto.payments import v1 as payments_v1


def escrow_hold(*, command: escrow_v1.HoldEscrow, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        reason = require_reason(command.reason)
        escrow.on_hold_since = timezone.now()
        emit(
            escrow,
            escrow_v1.EscrowPutOnHold(escrow_id=str(escrow.id), actor=command.actor),
            actor=command.actor,
            command_id=command_id,
            text={"reason": reason},
        )

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_unhold(*, command: escrow_v1.UnholdEscrow, command_id: uuid.UUID) -> CommandResult:
    def apply(escrow: Escrow) -> None:
        reason = require_reason(command.reason)
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
        emit(
            escrow,
            escrow_v1.EscrowHoldLifted(
                escrow_id=str(escrow.id),
                actor=command.actor,
                funding_deadline=funding,
                inspection_deadline=inspection,
                acceptance_deadline=acceptance,
            ),
            actor=command.actor,
            command_id=command_id,
            text={"reason": reason},
        )

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_retry_payout(*, command: escrow_v1.RetryPayout, command_id: uuid.UUID) -> CommandResult:
    """Sends the pending transfer or refund again, only after its last attempt is known failed. The new
    payments command's id comes from the escrow's next version, so the provider sees a new idempotency
    key (the old key would only replay the failure), and a repeat of this command is a duplicate."""

    def apply(escrow: Escrow) -> None:
        reason = require_reason(command.reason)
        if escrow.attention == "transfer_failed" and escrow.pending_payout_minor > 0:
            if escrow.payout_parked:
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
        emit(
            escrow,
            escrow_v1.EscrowPayoutRetried(
                escrow_id=str(escrow.id),
                actor=command.actor,
                leg=leg,
                amount=money(amount, escrow.currency),
            ),
            actor=command.actor,
            command_id=command_id,
            text={"reason": reason},
        )
        if leg == "transfer":
            fee = fee_for(amount, escrow.fee_bps)
            send(
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
            send_refund(escrow, amount_minor=amount, command_id=command_id)

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def escrow_return_stranded_funds(*, command: escrow_v1.ReturnStrandedFunds, command_id: uuid.UUID) -> CommandResult:
    """Refunds a late or mismatched payment held by a settled escrow. The refund is booked like any other
    (pending, then EscrowRefunded moves it from held to refunded), so the money invariant holds throughout."""

    def apply(escrow: Escrow) -> None:
        reason = require_reason(command.reason)
        if escrow.pending_refund_minor:
            raise InvalidTransition("a refund is already pending for this escrow", state=escrow.state)
        amount = stranded_minor(escrow)
        if amount <= 0:
            raise InvalidTransition("the escrow holds no stranded money", state=escrow.state)
        escrow.pending_refund_minor = amount
        if escrow.attention in {"unexpected_payment", "payment_amount_mismatch"}:
            escrow.attention = ""
            escrow.attention_detail = ""
        emit(
            escrow,
            escrow_v1.EscrowStrandedFundsReturnRequested(
                escrow_id=str(escrow.id),
                actor=command.actor,
                amount=money(amount, escrow.currency),
            ),
            actor=command.actor,
            command_id=command_id,
            text={"reason": reason},
        )
        send_refund(escrow, amount_minor=amount, command_id=command_id)

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


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
        emit(
            escrow,
            escrow_v1.EscrowComplianceHoldResolved(
                escrow_id=str(escrow.id),
                actor=command.actor,
                decision=decision,
                funding_deadline=restarted,
            ),
            actor=command.actor,
            command_id=command_id,
            text={"note": command.note},
        )
        if decision == escrow_v1.ComplianceDecision.REFUND:
            _refund_after_review(escrow, actor=command.actor, command_id=command_id)

    return run_command(command=command, command_id=command_id, escrow_id=parse_id(command.escrow_id), apply=apply)


def _refund_after_review(escrow: Escrow, *, actor: Actor | None, command_id: uuid.UUID) -> None:
    if escrow.held_minor == 0:
        raise InvalidTransition(
            "nothing is held for this escrow: a blocked deposit stays frozen in custody", state=escrow.state
        )
    if escrow.pending_refund_minor:
        raise InvalidTransition("a refund is already pending", state=escrow.state)
    # A payout that screening blocked never left (TransferFailed): the buyer gets the funds back instead.
    escrow.pending_payout_minor = 0
    escrow.state = S.REFUNDING
    request_refund(escrow, amount_minor=escrow.held_minor, actor=actor, command_id=command_id)
