"""Row locks for the escrow aggregate, taken in one place and one order.

`escrow_lock` must be the first write of any transaction that appends events for an escrow: the
outbox stream lock on the escrow id first (it assigns no transaction id), then the row lock. See
`apps.outbox.publish.stream_lock` for why that keeps per-escrow order in the outbox (`aggregate_lock`
takes both, for every app that appends an aggregate's messages).
"""

from __future__ import annotations

import uuid

from apps.escrow.models import Escrow
from apps.outbox.public import aggregate_lock


def escrow_lock(escrow_id: uuid.UUID | str) -> Escrow | None:
    return aggregate_lock(str(escrow_id), Escrow.objects.filter(pk=escrow_id))
