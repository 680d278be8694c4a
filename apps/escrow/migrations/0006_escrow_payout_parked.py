from django.db import migrations, models


def mark_parked(apps, schema_editor):
    # Escrows parked before the flag existed were told so only in words (payments' reason for the
    # TransferFailed); from now on escrow reads the event's `awaiting_destination` field instead.
    Escrow = apps.get_model("escrow", "Escrow")
    Escrow.objects.filter(
        attention="transfer_failed", attention_detail__contains="awaiting payout destination"
    ).update(payout_parked=True)


class Migration(migrations.Migration):
    dependencies = [
        ("escrow", "0005_two_sided_deals"),
    ]

    operations = [
        migrations.AddField(
            model_name="escrow",
            name="payout_parked",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(mark_parked, migrations.RunPython.noop),
    ]
