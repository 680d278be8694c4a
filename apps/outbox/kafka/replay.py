"""Re-publishing a range of the outbox after Kafka lost data. Consumers dedupe by event id, so a replay
is harmless to them; it keeps (txid, id) order so per-key order holds within the replayed range."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from django.db.models import QuerySet

from apps.outbox.kafka.relay import OutboxRelay, RelayStats, records_from
from apps.outbox.models import OutboxMessage


def replay_selection(
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    escrow_id: str | None = None,
    type_name: str | None = None,
) -> QuerySet[OutboxMessage]:
    rows = OutboxMessage.objects.all()
    if since is not None:
        rows = rows.filter(occurred_at__gte=since)
    if until is not None:
        rows = rows.filter(occurred_at__lt=until)
    if escrow_id:
        rows = rows.filter(aggregate_id=escrow_id)
    if type_name:
        # Accept the short name (EscrowReleased) as well as the full protobuf name (escrow.v1.EscrowReleased).
        rows = rows.filter(type=type_name) if "." in type_name else rows.filter(type__endswith=f".{type_name}")
    return rows.order_by("txid", "id")


def replay_outbox(
    *,
    rows: QuerySet[OutboxMessage],
    servers: str | None = None,
    batch_size: int = 1000,
    report: Callable[[str], None] | None = None,
) -> RelayStats:
    total = rows.count()
    relay = OutboxRelay(servers=servers, batch_size=batch_size, report=report)
    say = report or (lambda line: None)
    try:
        after: tuple[int, int] = (-1, -1)
        while True:
            # Keyset pagination in delivery order: stable even while new rows arrive.
            page = records_from(
                rows.filter(txid__gte=after[0]).exclude(txid=after[0], id__lte=after[1])[:batch_size],
                encode_value=relay.encode_value,
            )
            if not page:
                break
            relay.publish_batch(page)
            after = (page[-1].txid, page[-1].id)
            say(f"replayed {relay.stats.published}/{total}")
        return relay.stats
    finally:
        relay.close()
