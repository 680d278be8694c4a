"""The shared cache's table, when the cache is the database's (the embedded default, CACHE_URL unset):
token revocations are written to it from the first user saved, so `migrate` alone gives a working
database. Other cache backends: nothing to do."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("gateway", "0007_auditlog_moved_to_core")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop, elidable=False)]
