"""The Kafka relay's progress becomes one checkpoint (txid, id) in delivery order, a SubscriberCheckpoint
row under a reserved name, instead of `published_at` on every row: marking each row published was a
non-HOT update per row (the column is in the partial indexes' predicate), the relay's most expensive work.

The checkpoint of an existing database is the end of its published prefix in delivery order: the last
row before the first unpublished one (the last row if every row is published; the start if none is).
Published rows after a gap are sent again (consumers dedupe by event id); none is skipped. Then the
column and the two partial indexes on it go."""

from django.db import migrations
from django.db.models import Q
from django.utils import timezone

# apps.outbox.models.RELAY_CHECKPOINT, spelled out: a migration does not follow the code's later changes.
RELAY_CHECKPOINT = "outbox:kafka-relay"


def published_prefix_end(outbox_rows) -> tuple[int, int]:
    """(txid, id) of the last row of the published prefix in delivery order, (0, 0) if it is empty.
    `outbox_rows`: a queryset of outbox rows that still have `published_at`."""
    first_unpublished = (
        outbox_rows.filter(published_at__isnull=True).order_by("txid", "id").values_list("txid", "id").first()
    )
    before = outbox_rows
    if first_unpublished is not None:
        txid, row_id = first_unpublished
        before = outbox_rows.filter(Q(txid__lt=txid) | Q(txid=txid, id__lt=row_id))
    return before.order_by("-txid", "-id").values_list("txid", "id").first() or (0, 0)


def checkpoint_from_published_at(apps, schema_editor):
    db = schema_editor.connection.alias
    outbox = apps.get_model("outbox", "OutboxMessage").objects.using(db)
    txid, row_id = published_prefix_end(outbox.all())
    apps.get_model("outbox", "SubscriberCheckpoint").objects.using(db).update_or_create(
        subscriber=RELAY_CHECKPOINT, defaults={"last_txid": txid, "last_id": row_id}
    )


def published_at_from_checkpoint(apps, schema_editor):
    db = schema_editor.connection.alias
    checkpoints = apps.get_model("outbox", "SubscriberCheckpoint").objects.using(db)
    checkpoint = checkpoints.filter(subscriber=RELAY_CHECKPOINT).first()
    if checkpoint is not None:
        txid, row_id = checkpoint.last_txid, checkpoint.last_id
        apps.get_model("outbox", "OutboxMessage").objects.using(db).filter(
            Q(txid__lt=txid) | Q(txid=txid, id__lte=row_id)
        ).update(published_at=timezone.now())
        checkpoint.delete()


class Migration(migrations.Migration):
    dependencies = [("outbox", "0003_outbox_xid_watermark_function")]

    operations = [
        migrations.RunPython(checkpoint_from_published_at, published_at_from_checkpoint),
        migrations.RunSQL(
            "DROP INDEX IF EXISTS outbox_unpublished_order",
            "CREATE INDEX IF NOT EXISTS outbox_unpublished_order ON outbox_outboxmessage (txid, id) "
            "WHERE published_at IS NULL",
        ),
        migrations.RemoveIndex(model_name="outboxmessage", name="outbox_unpublished"),
        migrations.RemoveField(model_name="outboxmessage", name="published_at"),
    ]
