from django.contrib import admin

from apps.escrow.admin import ReadOnlyAdmin
from apps.notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "user_id", "escrow_id", "kind", "status", "created_at")
    list_filter = ("kind", "status")
    readonly_fields = [f.name for f in Notification._meta.fields]
