"""What other apps may read of the projections: the escrow read model the edges answer from, the ops
desk's lists, and the projections' bus subscriber (wired in escrow_project/bus.py)."""

from apps.projections.handlers import SUBSCRIBER
from apps.projections.models import EscrowViewFields
from apps.projections.selectors import (
    escrow_timeline,
    escrow_view_get,
    escrow_view_wait,
    escrow_views_for_user,
    escrow_views_with_deadline_between,
    ops_attention_waiting,
    ops_compliance_holds,
    ops_daily_figures,
    ops_dead_letters,
    ops_failed_payouts,
    ops_needs_attention,
    ops_open_disputes,
    ops_stuck_payments,
)

__all__ = [
    "EscrowViewFields",
    "SUBSCRIBER",
    "escrow_timeline",
    "escrow_view_get",
    "escrow_view_wait",
    "escrow_views_for_user",
    "escrow_views_with_deadline_between",
    "ops_attention_waiting",
    "ops_compliance_holds",
    "ops_daily_figures",
    "ops_dead_letters",
    "ops_failed_payouts",
    "ops_needs_attention",
    "ops_open_disputes",
    "ops_stuck_payments",
]
