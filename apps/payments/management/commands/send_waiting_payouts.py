"""Sends payouts that waited for a seller's payout destination (normally sent when the seller registers
one; this retries those whose provider call failed then)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.payments import payouts


class Command(BaseCommand):
    help = "Send waiting payouts whose seller now has a payout destination."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--seller", type=int, default=None, help="only this seller's payouts")

    def handle(self, *args: Any, **options: Any) -> None:
        sent = payouts.waiting_payouts_send(seller_id=options["seller"])
        self.stdout.write(f"{sent} waiting payouts sent")
