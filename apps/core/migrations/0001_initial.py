# The staff audit log moves here from the gateway. Its table (`gateway_auditlog`) and rows stay where they
# are: this migration only tells Django's state that apps.core owns the model now.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('gateway', '0004_upload_evidence'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditLog',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('action', models.CharField(choices=[('resolve_dispute', 'Resolve Dispute'), ('add_note', 'Add Note'), ('replay_dead_letter', 'Replay Dead Letter'), ('rebuild_projections', 'Rebuild Projections'), ('hold', 'Hold'), ('unhold', 'Unhold'), ('retry_payout', 'Retry Payout'), ('return_stranded_funds', 'Return Stranded Funds'), ('resend_notification', 'Resend Notification'), ('upload_evidence', 'Upload Evidence')], max_length=50)),
                        ('escrow_id', models.UUIDField(blank=True, db_index=True, null=True)),
                        ('target', models.CharField(blank=True, max_length=200)),
                        ('reason', models.TextField()),
                        ('detail', models.JSONField(blank=True, default=dict)),
                        ('command_id', models.UUIDField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('actor', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'gateway_auditlog',
                        'ordering': ['-created_at', '-id'],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
