"""The state of the money for the ops desk: the totals the money invariant speaks of
(received = held + paid out + refunded + fees), by rail and currency, and the day-by-day movements as
a chart drawn on the server (SVG, nothing loaded from elsewhere).

Read-only. The totals are the escrow app's own books; the rail of each escrow comes from payments
through its public module, and the daily movements from the projections' daily figures."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from html import escape
from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone

from apps.escrow.models import Escrow

MONEY_FIELDS = ("received_minor", "paid_out_minor", "refunded_minor", "fee_minor", "held_minor")
NO_RAIL = "not collected yet"


@dataclass(frozen=True)
class MoneyTotals:
    rail: str
    currency: str
    escrows: int
    received_minor: int
    paid_out_minor: int
    refunded_minor: int
    fee_minor: int
    held_minor: int

    @property
    def balanced(self) -> bool:
        return self.received_minor == self.held_minor + self.paid_out_minor + self.refunded_minor + self.fee_minor


def _totals(escrows: Any, rail: str) -> list[MoneyTotals]:
    rows = (
        escrows.values("currency")
        .annotate(escrows=Count("id"), **{f: Sum(f) for f in MONEY_FIELDS})
        .order_by("currency")
    )
    return [
        MoneyTotals(
            rail=rail, currency=row["currency"], escrows=row["escrows"], **{f: int(row[f] or 0) for f in MONEY_FIELDS}
        )
        for row in rows
    ]


def money_totals() -> list[MoneyTotals]:
    """Totals now, per rail and currency (escrows with no payment order yet under NO_RAIL)."""
    from apps.payments.public import escrow_ids_on_rail, payment_rails

    totals: list[MoneyTotals] = []
    unassigned = Escrow.objects.all()
    for rail in payment_rails():
        ids = escrow_ids_on_rail(rail)
        totals += _totals(Escrow.objects.filter(id__in=ids), rail)
        unassigned = unassigned.exclude(id__in=ids)
    totals += _totals(unassigned, NO_RAIL)
    return totals


@dataclass
class DaySeries:
    currency: str
    days: list[datetime.date]
    held: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    refunded: list[int] = field(default_factory=list)


def daily_series(*, days: int = 30, today: datetime.date | None = None) -> list[DaySeries]:
    """Money that arrived (held), went to sellers (released, gross) and back to buyers (refunded), per UTC
    day over the last `days` days, one series per currency; days without movement are zeros."""
    from apps.projections.public import ops_daily_figures

    today = today or timezone.now().date()
    window = [today - datetime.timedelta(days=n) for n in range(days - 1, -1, -1)]
    by_currency: dict[str, dict[datetime.date, Any]] = {}
    for figure in ops_daily_figures(since=window[0]):
        by_currency.setdefault(figure.currency, {})[figure.day] = figure
    series = []
    for currency in sorted(by_currency):
        one = DaySeries(currency=currency, days=window)
        for day in window:
            figure = by_currency[currency].get(day)
            one.held.append(figure.held_minor if figure else 0)
            one.released.append(figure.released_minor if figure else 0)
            one.refunded.append(figure.refunded_minor if figure else 0)
        series.append(one)
    return series


# Colours that read apart for common colour blindness (Okabe-Ito).
SERIES_STYLE = (
    ("held", "Arrived (held)", "#0072B2"),
    ("released", "Paid to sellers (gross)", "#009E73"),
    ("refunded", "Refunded", "#D55E00"),
)


def _major(minor: int) -> str:
    return f"{minor / 100:,.0f}" if minor >= 10_000 else f"{minor / 100:,.2f}"


def daily_chart_svg(series: DaySeries, *, width: int = 900, height: int = 260) -> str:
    """Grouped bars per day (arrived, paid out, refunded) with a value axis, day labels and a legend."""
    left, right, top, bottom = 70, 10, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([*series.held, *series.released, *series.refunded, 1])
    step = plot_w / max(len(series.days), 1)
    bar_w = max(step / 4, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="money-chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(series.currency)}: money arrived, paid out and refunded per day</title>",
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_major(int(value))}</text>')
    for index, day in enumerate(series.days):
        x0 = left + index * step + (step - 3 * bar_w) / 2
        for offset, (key, label, colour) in enumerate(SERIES_STYLE):
            amount = getattr(series, key)[index]
            if amount:
                h = plot_h * amount / peak
                parts.append(
                    f'<rect class="bar-{key}" x="{x0 + offset * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                    f'width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}">'
                    f"<title>{day:%Y-%m-%d} {escape(label)}: {_major(amount)} {escape(series.currency)}"
                    "</title></rect>"
                )
        if index % max(len(series.days) // 10, 1) == 0 or index == len(series.days) - 1:
            parts.append(
                f'<text x="{left + index * step + step / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{day:%m-%d}</text>'
            )
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#333"/>')
    x = left
    for _key, label, colour in SERIES_STYLE:
        parts.append(
            f'<rect x="{x}" y="8" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="18">{escape(label)}</text>'
        )
        x += 28 + 7 * len(label)
    parts.append(f'<text x="{width - right}" y="18" text-anchor="end">{escape(series.currency)} per UTC day</text>')
    parts.append("</svg>")
    return "".join(parts)


def money_held_by_state() -> list[tuple[str, str, int, int]]:
    """(state, currency, held minor units, escrows holding money) for every state that holds money now."""
    rows = (
        Escrow.objects.filter(held_minor__gt=0)
        .values("state", "currency")
        .annotate(held=Sum("held_minor"), escrows=Count("id"))
        .order_by("state", "currency")
    )
    return [(row["state"], row["currency"], int(row["held"]), int(row["escrows"])) for row in rows]
