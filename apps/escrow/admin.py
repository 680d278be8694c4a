"""Escrows for staff: state and money are read-only; every change goes through commands."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.escrow.models import Escrow, EscrowEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EscrowEventInline(admin.TabularInline):
    model = EscrowEvent
    fields = ("version", "type", "actor_kind", "actor_id", "occurred_at", "data")
    readonly_fields = fields
    ordering = ("version",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Escrow)
class EscrowAdmin(ReadOnlyAdmin):
    list_display = ("id", "state", "amount_minor", "currency", "buyer", "seller", "attention", "created_at")
    list_filter = ("state", "attention", "currency")
    search_fields = ("id", "buyer__username", "seller__username")
    inlines = [EscrowEventInline]
    readonly_fields = [f.name for f in Escrow._meta.fields]


@admin.register(EscrowEvent)
class EscrowEventAdmin(ReadOnlyAdmin):
    list_display = ("escrow", "version", "type", "actor_kind", "occurred_at")
    list_filter = ("type",)
    search_fields = ("escrow__id", "event_id")
    readonly_fields = [f.name for f in EscrowEvent._meta.fields]
