"""Sends payouts that waited for a seller's payout destination (normally sent when the seller registers
one; this retries those whose provider call failed then). A staff action: `--staff USERNAME --reason TEXT`,
one AuditLog row per run."""

from __future__ import annotations

from typing import Any

from apps.core.public import AuditLog, StaffCommand
from apps.payments import payouts


class Command(StaffCommand):
    help = "Send waiting payouts whose seller now has a payout destination."
    audit_action = AuditLog.Action.SEND_WAITING_PAYOUTS

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("--seller", type=int, default=None, help="only this seller's payouts")

    def handle(self, *args: Any, **options: Any) -> None:
        seller = options["seller"]
        target = f"waiting payouts of seller {seller}" if seller is not None else "waiting payouts"
        with self.audited(options, target=target) as detail:
            sent = payouts.waiting_payouts_send(seller_id=seller)
            detail.update(seller=seller, sent=sent)
        self.stdout.write(f"{sent} waiting payouts sent")
