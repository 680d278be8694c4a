"""The three clocks of an escrow: the acceptance deadline (auto-cancel of a deal the counterparty never
accepted), the funding deadline (auto-cancel) and the inspection period (auto-release). Run by the bus worker on every tick, or by `manage.py fire_timers` from cron.

Each firing is an ordinary command sent through `dispatch` with a command id derived from the
escrow and its version, so two workers firing at once have one effect, and a lost race is a no-op.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from apps.escrow.dispatch import dispatch
from apps.escrow.errors import EscrowError
from apps.escrow.models import Escrow, EscrowState
from apps.escrow.rules import COMPLIANCE_HOLD
from apps.outbox.public import deterministic_id
from proto.common.v1 import Actor, ActorKind
from proto.escrow import v1 as escrow_v1

log = logging.getLogger(__name__)
TIMER = Actor(kind=ActorKind.TIMER)


def fire_due_timers(*, limit: int = 500) -> int:
    now = timezone.now()
    fired = 0
    # A compliance hold stops both clocks (the commands refuse them too; skipping here keeps
    # held escrows from being retried on every tick).
    # An ops hold (on_hold_since) stops them as well; lifting it moves the deadline on by the time held.
    unanswered = Escrow.objects.filter(
        state=EscrowState.AWAIT_ACCEPTANCE, acceptance_deadline__lte=now, on_hold_since__isnull=True
    )
    for escrow_id, version in unanswered.values_list("id", "version")[:limit]:
        command = escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=TIMER, reason="acceptance deadline passed")
        fired += _fire(command, deterministic_id(escrow_id, version, "acceptance-deadline"))
    expired = Escrow.objects.filter(
        state=EscrowState.AWAIT_FUNDS, funding_deadline__lte=now, on_hold_since__isnull=True
    ).exclude(attention=COMPLIANCE_HOLD)
    for escrow_id, version in expired.values_list("id", "version")[:limit]:
        command = escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=TIMER, reason="funding deadline passed")
        fired += _fire(command, deterministic_id(escrow_id, version, "funding-deadline"))
    lapsed = Escrow.objects.filter(
        state=EscrowState.DELIVERED, inspection_deadline__lte=now, on_hold_since__isnull=True
    ).exclude(attention=COMPLIANCE_HOLD)
    for escrow_id, version in lapsed.values_list("id", "version")[:limit]:
        release = escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=TIMER)
        fired += _fire(release, deterministic_id(escrow_id, version, "inspection-lapsed"))
    return fired


def _fire(command: escrow_v1.CancelEscrow | escrow_v1.ReleaseFunds, command_id: object) -> int:
    try:
        result = dispatch(command, command_id=command_id)  # type: ignore[arg-type]
    except EscrowError as exc:
        # Someone acted first (a release, a dispute): the timer has nothing left to do.
        log.info("timer not applied", extra={"escrow_id": command.escrow_id, "reason": exc.detail})
        return 0
    return 0 if result.duplicate else 1
