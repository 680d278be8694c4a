"""What other apps may read of the projections: the escrow read model the edges answer from."""

from apps.projections.selectors import (
    escrow_timeline,
    escrow_view_get,
    escrow_view_wait,
    escrow_views_for_user,
    escrow_views_with_deadline_between,
    ops_attention_waiting,
    ops_daily_figures,
)

__all__ = [
    "escrow_timeline",
    "escrow_view_get",
    "escrow_view_wait",
    "escrow_views_for_user",
    "escrow_views_with_deadline_between",
    "ops_attention_waiting",
    "ops_daily_figures",
]
