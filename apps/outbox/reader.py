"""Reading the outbox in commit order: where each subscriber stands (its checkpoint), and which rows it
may take now.

No message is skipped when transactions commit out of order: on PostgreSQL a reader only takes rows
written by transactions older than every transaction still running (the xid watermark), in (txid, id)
order; SQLite has one writer at a time, so insertion order is commit order."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Min, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.outbox.models import RELAY_CHECKPOINT, OutboxMessage, SubscriberCheckpoint
from apps.outbox.registry import Subscriber

# The xid watermark: rows written by transactions below it are settled (committed or rolled back) in
# the reading statement's snapshot, so reading only below it, in (txid, id) order, never skips a row.
# It is the oldest transaction still running (pg_snapshot_xmin), except that transactions positively
# known to run in ANOTHER database are ignored: they cannot write this outbox, and on a shared server
# they would otherwise hold delivery back. A transaction whose database is unknown (finished since
# the snapshot, or hidden from pg_stat_activity) still counts, so the filter can only err on the safe
# side. xids in pg_stat_activity are 32-bit; within one snapshot the low 32 bits are unambiguous.
# The query lives in the SQL function `outbox_xid_watermark()` (migration outbox 0003): planning it
# cost more than running it. The function is STABLE, so it sees the calling statement's snapshot; the
# sub-select makes it run once per statement, not once per row.
XID_WATERMARK_SQL = "(SELECT outbox_xid_watermark())"


def subscriber_checkpoint(name: str) -> SubscriberCheckpoint:
    """The subscriber's committed position in the outbox (created at the start if it has none)."""
    checkpoint, _ = SubscriberCheckpoint.objects.get_or_create(subscriber=name)
    return checkpoint


def save_checkpoint(name: str, row: OutboxMessage) -> None:
    SubscriberCheckpoint.objects.filter(subscriber=name).update(
        last_txid=row.txid, last_id=row.id, updated_at=timezone.now()
    )


def save_checkpoints(positions: dict[str, OutboxMessage]) -> None:
    """Moves several subscribers' checkpoints, in one statement on PostgreSQL."""
    if connection.vendor != "postgresql" or len(positions) < 2:
        for name, row in positions.items():
            save_checkpoint(name, row)
        return
    values = ", ".join(["(%s, %s::bigint, %s::bigint)"] * len(positions))
    params = [value for name, row in positions.items() for value in (name, row.txid, row.id)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {SubscriberCheckpoint._meta.db_table} AS c
                SET last_txid = v.txid, last_id = v.id, updated_at = now()
                FROM (VALUES {values}) AS v(name, txid, id) WHERE c.subscriber = v.name""",
            params,
        )


def rows_after(txid: int, row_id: int) -> Q:
    """Outbox rows after the position (txid, id), in the bus's commit order."""
    return Q(txid__gt=txid) | Q(txid=txid, id__gt=row_id)


def rows_up_to(txid: int, row_id: int) -> Q:
    """Outbox rows at or before the position (txid, id) in delivery order: the complement of `rows_after`."""
    return Q(txid__lt=txid) | Q(txid=txid, id__lte=row_id)


# --- the Kafka relay's progress: a row is published iff it is at or before the relay's checkpoint ---------


def relay_position() -> tuple[int, int]:
    """The relay's checkpoint (txid, id): every row up to it in delivery order was acknowledged by Kafka."""
    checkpoint = subscriber_checkpoint(RELAY_CHECKPOINT)
    return checkpoint.last_txid, checkpoint.last_id


def unpublished_rows() -> QuerySet[OutboxMessage]:
    """The rows the relay has not published yet (after its checkpoint)."""
    return OutboxMessage.objects.filter(rows_after(*relay_position()))


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age_seconds: float

    def __str__(self) -> str:
        return f"pending={self.pending} lag={self.oldest_age_seconds:.1f}s"


def backlog() -> Backlog:
    """Relay lag: how many rows wait and the age of the oldest one (the relay's progress lines, the
    metrics)."""
    # One statement, one pass over the unpublished rows (it was a count and a sort, at every relay start).
    found = unpublished_rows().aggregate(pending=Count("id"), oldest=Min("occurred_at"))
    oldest = found["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return Backlog(pending=found["pending"], oldest_age_seconds=max(age, 0.0))


def published_rows() -> QuerySet[OutboxMessage]:
    return OutboxMessage.objects.filter(rows_up_to(*relay_position()))


def is_published(row: OutboxMessage) -> bool:
    return (row.txid, row.id) <= relay_position()


def advance_relay_checkpoint(position: tuple[int, int]) -> bool:
    """Moves the relay's checkpoint forward to `position`, in one small UPDATE; never backwards, so a relay
    that lost its lease and settles a late batch cannot rewind what the active relay published. Returns
    whether it moved. The checkpoint row exists: the relay reads its position before it sends anything."""
    txid, row_id = position
    moved = SubscriberCheckpoint.objects.filter(
        Q(last_txid__lt=txid) | Q(last_txid=txid, last_id__lt=row_id), subscriber=RELAY_CHECKPOINT
    ).update(last_txid=txid, last_id=row_id, updated_at=timezone.now())
    return moved > 0


def subscriber_checkpoints(names: list[str]) -> dict[str, SubscriberCheckpoint]:
    """Several subscribers' checkpoints in one read (each created at the start if it has none)."""
    found = {c.subscriber: c for c in SubscriberCheckpoint.objects.filter(subscriber__in=names)}
    return {name: found[name] if name in found else subscriber_checkpoint(name) for name in names}


def pending_rows(subscriber: Subscriber, txid: int, row_id: int, limit: int) -> tuple[list[OutboxMessage], int | None]:
    """`pending_rows_on` the subscriber's topics."""
    return pending_rows_on(subscriber.topics, txid, row_id, limit)


def pending_rows_on(
    topics: frozenset[str], txid: int, row_id: int, limit: int
) -> tuple[list[OutboxMessage], int | None]:
    """The rows on these topics a reader can take now, in delivery order, and the txid of the first
    committed row it cannot take yet because an older transaction is still open (None if there is none).

    One statement: the rows after the checkpoint come with the watermark, and since they are in txid
    order the settled ones (txid below it) are a prefix; the first row after that prefix is held back.
    """
    rows = OutboxMessage.objects.filter(rows_after(txid, row_id), topic__in=topics).order_by("txid", "id")
    if connection.vendor != "postgresql":
        return list(rows[:limit]), None
    fetched = list(rows.annotate(watermark=RawSQL(XID_WATERMARK_SQL, []))[:limit])
    settled: list[OutboxMessage] = [row for row in fetched if row.txid < row.watermark]
    held_back = fetched[len(settled)].txid if len(settled) < len(fetched) else None
    return settled, held_back


def subscribers_with_work(selected: list[Subscriber]) -> list[Subscriber]:
    """The subscribers that have outbox rows after their checkpoint (settled or held back), in one
    statement: a drain pass skips the others instead of spending a lock, a checkpoint read and an outbox
    read on each. Rows committed after this read announce themselves (wake, NOTIFY)."""
    if connection.vendor != "postgresql" or not selected:
        return selected
    values = ", ".join(["(%s, %s::text[])"] * len(selected))
    params = [value for sub in selected for value in (sub.name, sorted(sub.topics))]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT v.name FROM (VALUES {values}) AS v(name, topics)
                LEFT JOIN {SubscriberCheckpoint._meta.db_table} c ON c.subscriber = v.name
                WHERE EXISTS (
                    SELECT 1 FROM {OutboxMessage._meta.db_table} o
                    WHERE (o.txid, o.id) > (COALESCE(c.last_txid, 0), COALESCE(c.last_id, 0))
                      AND o.topic = ANY(v.topics))""",
            params,
        )
        names = {name for (name,) in cursor.fetchall()}
    return [sub for sub in selected if sub.name in names]


def wait_for_watermark(txid: int, budget: float) -> float:
    """Polls the xid watermark (no outbox scan) until it passes `txid` or `budget` seconds pass; returns
    the time spent. Transactions that wrote no outbox rows announce nothing when they end, hence polling."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"SELECT {XID_WATERMARK_SQL}")
            if cursor.fetchone()[0] > txid:
                break
            if time.monotonic() - started >= budget:
                break
            time.sleep(0.002)
    return max(time.monotonic() - started, 0.002)


def lag(subscriber: Subscriber) -> int:
    checkpoint = subscriber_checkpoint(subscriber.name)
    return OutboxMessage.objects.filter(
        rows_after(checkpoint.last_txid, checkpoint.last_id), topic__in=subscriber.topics
    ).count()
