# The audit log's model now lives in apps.core (its table is unchanged). The gateway keeps a proxy of it
# that carries the staff permissions, so their content type and every group's grants stay as they are.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('gateway', '0006_idempotency_expiry'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='AuditLog',
                ),
                migrations.CreateModel(
                    name='AuditLog',
                    fields=[
                    ],
                    options={
                        'permissions': [('resolve_dispute', 'Can resolve a dispute (release, refund or split)'), ('add_dispute_note', 'Can add a note to a dispute'), ('hold_escrow', 'Can put an escrow on hold for an investigation and lift the hold'), ('retry_payout', 'Can retry a failed transfer or refund'), ('return_stranded_funds', 'Can refund money a settled escrow still holds'), ('upload_evidence', 'Can upload dispute evidence on behalf of a party')],
                        'proxy': True,
                        'indexes': [],
                        'constraints': [],
                    },
                    bases=('core.auditlog',),
                ),
            ],
            database_operations=[],
        ),
    ]
