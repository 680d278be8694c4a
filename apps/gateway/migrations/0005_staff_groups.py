"""The staff groups and their permissions exist from the first `migrate`, so `mint_token --staff` (and
the admin) work at once. `manage.py setup_staff_groups` applies the same list again (idempotent)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from apps.gateway.management.commands.setup_staff_groups import GROUP_PERMISSIONS


def staff_groups_create(apps, schema_editor):
    # Permissions are normally created after the last migration (post_migrate); make them now, so the
    # groups can be given them on a fresh database.
    for app_config in apps.get_app_configs():
        previous, app_config.models_module = getattr(app_config, "models_module", None), True
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = previous
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("gateway", "0004_upload_evidence"),
        ("escrow", "0004_evidence"),
        ("outbox", "0003_outbox_xid_watermark_function"),
        ("projections", "0002_blue_green_and_ops_queues"),
    ]

    operations = [migrations.RunPython(staff_groups_create, migrations.RunPython.noop)]
