"""Which physical tables a projection set reads and writes: the blue/green pointer."""

from __future__ import annotations

from dataclasses import dataclass

from apps.projections.models import (
    BLUE,
    GREEN,
    ActiveGeneration,
    DailyFigure,
    DailyFigureFields,
    DailyFigureGreen,
    EscrowView,
    EscrowViewFields,
    EscrowViewGreen,
    TimelineEntry,
    TimelineEntryGreen,
    TimelineFields,
)

# The one projection set today: everything the "projections" subscriber folds from escrow.events.v1.
ESCROWS = "escrows"
PROJECTION_SETS = (ESCROWS,)


@dataclass(frozen=True)
class Tables:
    color: str
    view: type[EscrowViewFields]
    timeline: type[TimelineFields]
    daily: type[DailyFigureFields]

    def all(self) -> tuple[type[EscrowViewFields] | type[TimelineFields] | type[DailyFigureFields], ...]:
        return (self.view, self.timeline, self.daily)


_TABLES = {
    BLUE: Tables(BLUE, EscrowView, TimelineEntry, DailyFigure),
    GREEN: Tables(GREEN, EscrowViewGreen, TimelineEntryGreen, DailyFigureGreen),
}


def tables_for(color: str) -> Tables:
    return _TABLES[color]


def other_color(color: str) -> str:
    return GREEN if color == BLUE else BLUE


def active_color(name: str = ESCROWS) -> str:
    row = ActiveGeneration.objects.filter(name=name).only("color").first()
    return row.color if row is not None else BLUE


def active_tables(name: str = ESCROWS) -> Tables:
    return tables_for(active_color(name))


def live_tables_locked(name: str = ESCROWS) -> Tables:
    """The live colour for a handler about to write it, with the pointer row share-locked until that
    handler's transaction ends: a rebuild's flip (FOR UPDATE) waits for it, and a handler that starts
    after the flip waits for the flip and then writes the new colour. This is what keeps a projections
    consumer fed from Kafka (which takes no bus drain lock) from writing a colour that was just retired."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return active_tables(name)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT color FROM {ActiveGeneration._meta.db_table} WHERE name = %s FOR KEY SHARE", [name])
        row = cursor.fetchone()
    return tables_for(row[0] if row is not None else BLUE)
