"""Reminders before a deadline, once each: acceptance (the counterparty, with Accept and Decline),
funding (the buyer, with the Pay link) and inspection (the buyer: release or open a dispute).

A bus worker tick (`send_due_reminders`) looks, at most every REMINDER_SCAN_SECONDS, for escrows whose
deadline is within the reminder's lead time (a setting per kind) and still in the state the deadline
belongs to, and owes each recipient one Notification. The notification's event id is derived from the
escrow, the kind and the deadline, so a reminder is owed once however often the scan runs or how many
workers run it (the unique (event, user) constraint); a deadline moved on by an ops hold earns a new one.
Delivery, preferences (a reminder kind can be switched off) and retries are the ordinary DM path."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.notifications.components import deal_buttons
from apps.notifications.models import Notification
from apps.payments import public as payments
from apps.projections import public as projections

_REMINDER_NAMESPACE = uuid.UUID("3c0a6d2e-8f7b-4a51-9d7e-52b8e4a1f0c6")


@dataclass(frozen=True)
class Rule:
    kind: str
    state: str
    deadline: str  # the read model's deadline field
    lead: Callable[[], datetime.timedelta]
    recipient: Callable[[Any], int]
    text: Callable[[Any, datetime.datetime], str]
    buttons: Callable[[Any], list[dict[str, Any]]]


def _when(deadline: datetime.datetime) -> str:
    # Discord shows <t:unix:f> in the reader's own time zone, and :R as "in 3 hours".
    stamp = int(deadline.timestamp())
    return f"<t:{stamp}:f> (<t:{stamp}:R>)"


def _amount(view: Any) -> str:
    return f"{view.amount_minor // 100}.{view.amount_minor % 100:02d} {view.currency}"


def _hours(name: str) -> Callable[[], datetime.timedelta]:
    return lambda: datetime.timedelta(hours=getattr(settings, name))


def _counterparty(view: Any) -> int:
    creator = view.created_by_id or view.buyer_id
    return view.seller_id if creator == view.buyer_id else view.buyer_id


RULES: tuple[Rule, ...] = (
    Rule(
        kind="reminder_acceptance",
        state="AWAIT_ACCEPTANCE",
        deadline="acceptance_deadline",
        lead=_hours("REMINDER_ACCEPTANCE_HOURS_BEFORE"),
        recipient=_counterparty,
        text=lambda v, d: (
            f"Reminder: a deal for {_amount(v)} ({v.description[:200]!r}) waits for your answer. "
            f"Accept or decline it by {_when(d)}, or it is cancelled."
        ),
        buttons=lambda v: deal_buttons(escrow_id=v.escrow_id, actions=("accept", "decline")),
    ),
    Rule(
        kind="reminder_funding",
        state="AWAIT_FUNDS",
        deadline="funding_deadline",
        lead=_hours("REMINDER_FUNDING_HOURS_BEFORE"),
        recipient=lambda v: v.buyer_id,
        text=lambda v, d: (
            f"Reminder: pay {_amount(v)} for {v.description[:200]!r} by {_when(d)}, or the deal is cancelled."
        ),
        buttons=lambda v: deal_buttons(
            escrow_id=v.escrow_id,
            actions=("pay",),
            checkout_url=payments.checkout_url(escrow_id=str(v.escrow_id), funding_deadline=v.funding_deadline),
        ),
    ),
    Rule(
        kind="reminder_inspection",
        state="DELIVERED",
        deadline="inspection_deadline",
        lead=_hours("REMINDER_INSPECTION_HOURS_BEFORE"),
        recipient=lambda v: v.buyer_id,
        text=lambda v, d: (
            f"Reminder: the inspection period for {v.description[:200]!r} ends {_when(d)}. Release "
            "the funds or open a dispute; if you do neither, the seller is paid then."
        ),
        buttons=lambda v: deal_buttons(escrow_id=v.escrow_id, actions=("release", "dispute")),
    ),
)

_last_scan = {"at": 0.0}


def send_due_reminders(*, now: datetime.datetime | None = None, force: bool = False) -> int:
    """A bus worker tick: owes the reminders that are due; returns how many it newly owes. Scans at most
    every REMINDER_SCAN_SECONDS (the worker ticks far more often than deadlines approach)."""
    if not force and time.monotonic() - _last_scan["at"] < settings.REMINDER_SCAN_SECONDS:
        return 0
    _last_scan["at"] = time.monotonic()
    now = now or timezone.now()
    owed: list[Notification] = []
    for rule in RULES:
        views = projections.escrow_views_with_deadline_between(
            state=rule.state, deadline=rule.deadline, start=now, end=now + rule.lead()
        )[:500]
        candidates = {}
        for view in views:
            deadline = getattr(view, rule.deadline)
            event_id = uuid.uuid5(_REMINDER_NAMESPACE, f"{view.escrow_id}:{rule.kind}:{deadline.isoformat()}")
            candidates[event_id] = (view, deadline)
        if not candidates:
            continue
        known = set(Notification.objects.filter(event_id__in=list(candidates)).values_list("event_id", flat=True))
        for event_id, (view, deadline) in candidates.items():
            if event_id in known:
                continue
            owed.append(
                Notification(
                    event_id=event_id,
                    user_id=rule.recipient(view),
                    escrow_id=view.escrow_id,
                    kind=rule.kind,
                    text=rule.text(view, deadline)[:2000],
                    components=rule.buttons(view),
                )
            )
    if not owed:
        return 0
    # A concurrent scan may have owed the same reminder: the unique (event, user) keeps one. The worker's
    # notifications tick, which runs after this one, sends them.
    Notification.objects.bulk_create(owed, ignore_conflicts=True)
    return len(owed)
