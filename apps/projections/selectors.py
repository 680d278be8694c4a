"""Reads of the projections, for the gateway and the admin. Every read follows the blue/green pointer."""

from __future__ import annotations

import datetime
import functools
import time
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.projections.models import BLUE, GREEN, ActiveGeneration, EscrowView, EscrowViewFields, EscrowViewGreen
from apps.projections.tables import ESCROWS, active_tables

# The ops queues' idea of "stuck": a payout or refund that has not come back for this long.
MONEY_MOVING_STUCK_AFTER = datetime.timedelta(hours=1)
FAILED_PAYOUT_REASONS = ("transfer_failed", "refund_failed")


def escrow_view_get(*, escrow_id: str) -> EscrowViewFields | None:
    """The escrow's view in the live colour, in ONE statement: the primary-key read of each colour's table,
    each guarded by the blue/green pointer (a subquery on its primary key), so only the live one answers.
    (Reading the pointer first and then the view was two round trips on every GET.) Plain SQL, built once:
    the ORM's compilation of the same union cost more CPU than the two queries it replaces."""
    from django.db import connection

    key = EscrowView._meta.pk.get_db_prep_value(escrow_id, connection)  # a uuid, or its hex on SQLite
    with connection.cursor() as cursor:
        cursor.execute(_view_sql(), [key, key])
        row = cursor.fetchone()
    if row is None:
        return None
    model = EscrowView if row[-1] == BLUE else EscrowViewGreen
    values = [
        functools.reduce(lambda value, convert: convert(value, expression, connection), converters, value)
        for value, (expression, converters) in zip(row[:-1], _converters(model, connection.vendor), strict=True)
    ]
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], values)


@functools.cache
def _converters(model: type[EscrowViewFields], vendor: str) -> list[tuple[Any, list[Any]]]:
    """What the ORM would apply to each column read (SQLite keeps uuids and times as text, for example)."""
    from django.db import connection

    found = []
    for field in model._meta.concrete_fields:
        expression = field.get_col(model._meta.db_table)
        found.append(
            (expression, connection.ops.get_db_converters(expression) + expression.get_db_converters(connection))
        )
    return found


@functools.cache
def _view_sql() -> str:
    pointer = (
        f'SELECT 1 FROM "{ActiveGeneration._meta.db_table}" WHERE "name" = \'{ESCROWS}\' AND "color" = \'{GREEN}\''
    )

    def one(model: type[EscrowViewFields], colour: str, live: str) -> str:
        columns = ", ".join(f'"{f.column}"' for f in model._meta.concrete_fields)
        return (
            f"SELECT {columns}, '{colour}' FROM \"{model._meta.db_table}\" "
            f'WHERE "{model._meta.pk.column}" = %s AND {live} ({pointer})'
        )

    return f"{one(EscrowView, BLUE, 'NOT EXISTS')} UNION ALL {one(EscrowViewGreen, GREEN, 'EXISTS')} LIMIT 1"


# How long a read-your-writes wait trusts the live colour it read at its start (one query instead of
# one per 5 ms poll; a wait is usually over in tens of milliseconds).
_COLOUR_RECHECK_SECONDS = 0.1


def escrow_view_wait(*, escrow_id: str, version: int, timeout_seconds: float) -> bool:
    """Read-your-writes: waits (bounded) until the read model shows this escrow at `version` or later.
    Returns False if it did not in time; the caller answers anyway (the write is committed)."""
    deadline = time.monotonic() + timeout_seconds
    tables, colour_read_at = active_tables(), time.monotonic()
    while True:
        if tables.view.objects.filter(escrow_id=escrow_id, version__gte=version).exists():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if now - colour_read_at >= _COLOUR_RECHECK_SECONDS:
            # A rebuild may have flipped the live colour during the wait: look at the new one.
            tables, colour_read_at = active_tables(), now
        time.sleep(0.005)


def escrow_views_for_user(*, user_id: int, role: str | None = None, state: str | None = None) -> QuerySet[Any]:
    views = active_tables().view.objects
    if role == "buyer":
        found = views.filter(buyer_id=user_id)
    elif role == "seller":
        found = views.filter(seller_id=user_id)
    else:
        found = views.filter(Q(buyer_id=user_id) | Q(seller_id=user_id))
    if state:
        found = found.filter(state=state)
    return found.order_by("-created_at", "escrow_id")


def escrow_views_with_deadline_between(
    *, state: str, deadline: str, start: datetime.datetime, end: datetime.datetime
) -> QuerySet[Any]:
    """Escrows in `state` whose `deadline` (a deadline field of the view) falls in [start, end): what
    the reminders ask for."""
    if deadline not in DEADLINE_FIELDS:
        raise ValueError(f"unknown deadline field {deadline!r}")
    return (
        active_tables()
        .view.objects.filter(state=state, **{f"{deadline}__gte": start, f"{deadline}__lt": end})
        .order_by(deadline, "escrow_id")
    )


DEADLINE_FIELDS = frozenset({"acceptance_deadline", "funding_deadline", "inspection_deadline"})


def escrow_timeline(*, escrow_id: str) -> QuerySet[Any]:
    return active_tables().timeline.objects.filter(escrow_id=escrow_id).order_by("version")


# --- ops queues --------------------------------------------------------------------------------------


def ops_open_disputes() -> QuerySet[Any]:
    """Open disputes, oldest first: the agent works the queue from the top."""
    return active_tables().view.objects.filter(state="DISPUTED").order_by("disputed_at", "escrow_id")


def ops_stuck_payments(*, now: datetime.datetime | None = None) -> QuerySet[Any]:
    """Escrows waiting past their time: unanswered past the acceptance deadline or unfunded past the
    funding deadline (the timer should have cancelled them), or a payout / refund that has not come back
    for a while."""
    now = now or timezone.now()
    views = active_tables().view.objects
    return views.filter(
        Q(state="AWAIT_ACCEPTANCE", acceptance_deadline__lt=now)
        | Q(state="AWAIT_FUNDS", funding_deadline__lt=now)
        | Q(state__in=("RELEASING", "REFUNDING"), state_since__lt=now - MONEY_MOVING_STUCK_AFTER)
    ).order_by("state_since", "escrow_id")


def ops_compliance_holds() -> QuerySet[Any]:
    return active_tables().view.objects.filter(attention="compliance_hold").order_by("attention_since", "escrow_id")


def ops_attention_waiting() -> list[tuple[str, int, float]]:
    """(attention, escrows, seconds the longest-waiting one has waited) for each kind of attention open now
    (compliance_hold, transfer_failed, ...): what the alerts watch."""
    from django.db.models import Count, Min
    from django.utils import timezone

    now = timezone.now()
    rows = (
        active_tables()
        .view.objects.exclude(attention="")
        .values("attention")
        .annotate(n=Count("escrow_id"), oldest=Min("attention_since"))
        .order_by("attention")
    )
    return [
        (row["attention"], row["n"], max((now - row["oldest"]).total_seconds(), 0.0) if row["oldest"] else 0.0)
        for row in rows
    ]


def ops_needs_attention() -> QuerySet[Any]:
    """Everything a human must look at (mismatched payments, chargebacks, failures, holds), oldest first."""
    return active_tables().view.objects.exclude(attention="").order_by("attention_since", "escrow_id")


def ops_failed_payouts() -> QuerySet[Any]:
    return (
        active_tables()
        .view.objects.filter(attention__in=FAILED_PAYOUT_REASONS)
        .order_by("attention_since", "escrow_id")
    )


def ops_daily_figures(*, since: datetime.date | None = None) -> QuerySet[Any]:
    figures = active_tables().daily.objects.all()
    if since is not None:
        figures = figures.filter(day__gte=since)
    return figures.order_by("-day", "currency")


def ops_dead_letters() -> QuerySet[Any]:
    """Dead letters are bus bookkeeping, not an event-fed read model: read from the outbox app."""
    from apps.outbox.public import DeadLetter

    return DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).order_by("created_at")
