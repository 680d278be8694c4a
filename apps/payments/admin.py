from __future__ import annotations

from django.contrib import admin

from apps.core.public import ReadOnlyAdmin
from apps.payments.models import (
    PaymentArtifact,
    PaymentOrder,
    PayoutDestination,
    WaitingPayout,
    WalletScreening,
    WebhookEvent,
)


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


@admin.register(PayoutDestination)
class PayoutDestinationAdmin(ReadOnlyAdmin):
    list_display = ("seller_id", "stripe_account_id", "wallet_address", "updated_at")
    search_fields = ("seller_id", "stripe_account_id", "wallet_address")
    readonly_fields = [f.name for f in PayoutDestination._meta.fields]


@admin.register(WaitingPayout)
class WaitingPayoutAdmin(ReadOnlyAdmin):
    list_display = ("escrow_id", "seller_id", "provider", "amount_minor", "currency", "status", "last_error")
    list_filter = ("status", "provider")
    search_fields = ("escrow_id",)
    readonly_fields = [f.name for f in WaitingPayout._meta.fields]


@admin.register(WalletScreening)
class WalletScreeningAdmin(ReadOnlyAdmin):
    list_display = ("screened_at", "address", "purpose", "vendor", "allowed", "reason", "escrow_id")
    list_filter = ("allowed", "vendor", "purpose")
    search_fields = ("address", "escrow_id")
    readonly_fields = [f.name for f in WalletScreening._meta.fields]
