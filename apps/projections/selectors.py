"""Reads of the projections, for the gateway."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.projections.models import EscrowView, TimelineEntry


def escrow_view_get(*, escrow_id: str) -> EscrowView | None:
    return EscrowView.objects.filter(escrow_id=escrow_id).first()


def escrow_views_for_user(*, user_id: int, role: str | None = None, state: str | None = None) -> QuerySet[EscrowView]:
    if role == "buyer":
        views = EscrowView.objects.filter(buyer_id=user_id)
    elif role == "seller":
        views = EscrowView.objects.filter(seller_id=user_id)
    else:
        views = EscrowView.objects.filter(Q(buyer_id=user_id) | Q(seller_id=user_id))
    if state:
        views = views.filter(state=state)
    return views.order_by("-created_at", "escrow_id")


def escrow_timeline(*, escrow_id: str) -> QuerySet[TimelineEntry]:
    return TimelineEntry.objects.filter(escrow_id=escrow_id).order_by("version")
