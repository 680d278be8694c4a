"""Free text is the escrow's own record. A deal's description and the reasons and notes people give are
kept on the escrow and in its event log (`EscrowEvent.data`); no message that leaves escrow carries them:
events carry ids, amounts, codes and times, and the copy of an accepted command written to
escrow.commands.v1 has its free text blanked. Another app that shows the text reads it here, by the id of
the event it was given (`event_text`)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping

import betterproto2

from apps.escrow.models import EscrowEvent
from proto.escrow import v1 as escrow_v1

# The string fields of escrow commands that hold what a person typed.
FREE_TEXT_FIELDS = ("description", "reason", "note")


def without_free_text(command: betterproto2.Message) -> betterproto2.Message:
    """A copy of `command` with its free-text fields emptied, for the record that leaves escrow."""
    blank = copy.deepcopy(command)
    for name in FREE_TEXT_FIELDS:
        if isinstance(getattr(blank, name, None), str):
            setattr(blank, name, "")
    return blank


def event_text(event_id: uuid.UUID | str) -> dict[str, str]:
    """The free text recorded with one escrow event (empty when it has none or is unknown)."""
    data = EscrowEvent.objects.filter(event_id=event_id).values_list("data", flat=True).first()
    if not isinstance(data, Mapping):
        return {}
    return {name: str(data[name]) for name in FREE_TEXT_FIELDS if data.get(name)}


# The events recorded with free text (`event_text` finds nothing for the others).
TEXT_EVENTS: frozenset[type[betterproto2.Message]] = frozenset(
    {
        escrow_v1.EscrowCreated,
        escrow_v1.EscrowDeclined,
        escrow_v1.EscrowCancelled,
        escrow_v1.EscrowDisputed,
        escrow_v1.EscrowDisputeResolved,
        escrow_v1.EscrowPutOnHold,
        escrow_v1.EscrowHoldLifted,
        escrow_v1.EscrowPayoutRetried,
        escrow_v1.EscrowStrandedFundsReturnRequested,
        escrow_v1.EscrowComplianceHoldResolved,
    }
)
