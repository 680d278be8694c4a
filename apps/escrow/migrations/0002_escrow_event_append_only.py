"""On PostgreSQL the audit log refuses UPDATE and DELETE at the database, not only in the model."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION escrow_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'escrow_escrowevent is append-only: UPDATE and DELETE are refused';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER escrow_event_append_only
    BEFORE UPDATE OR DELETE ON escrow_escrowevent
    FOR EACH ROW EXECUTE FUNCTION escrow_event_append_only();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS escrow_event_append_only ON escrow_escrowevent;
DROP FUNCTION IF EXISTS escrow_event_append_only();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("escrow", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
