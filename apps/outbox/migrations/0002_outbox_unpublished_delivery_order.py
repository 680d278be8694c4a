"""The relay reads unpublished rows in delivery order (txid, id). Without this partial index each batch
scans past every already-published row, so relay batches get slower as the outbox grows."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("outbox", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS outbox_unpublished_order ON outbox_outboxmessage (txid, id) "
            "WHERE published_at IS NULL",
            "DROP INDEX IF EXISTS outbox_unpublished_order",
        ),
    ]
