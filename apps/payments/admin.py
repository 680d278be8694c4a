from __future__ import annotations

from django.contrib import admin

from apps.escrow.admin import ReadOnlyAdmin
from apps.payments.models import PaymentArtifact, PaymentOrder, WebhookEvent


@admin.register(PaymentOrder)
class PaymentOrderAdmin(ReadOnlyAdmin):
    list_display = ("escrow_id", "provider", "amount_minor", "currency", "version", "created_at")
    readonly_fields = [f.name for f in PaymentOrder._meta.fields]


@admin.register(PaymentArtifact)
class PaymentArtifactAdmin(ReadOnlyAdmin):
    list_display = ("provider_id", "kind", "provider", "escrow_id", "amount_minor", "currency", "status")
    list_filter = ("kind", "provider", "status")
    search_fields = ("provider_id", "escrow_id")
    readonly_fields = [f.name for f in PaymentArtifact._meta.fields if f.name != "client_secret"]
    exclude = ("client_secret",)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "provider", "event_type", "provider_event_id", "status", "received_at")
    list_filter = ("provider", "status", "event_type")
    search_fields = ("provider_event_id",)
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
