"""manage.py rebuild_projections [NAME]: refill the idle colour from the event log and switch over."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.projections.rebuild import projection_rebuild
from apps.projections.tables import PROJECTION_SETS


class Command(BaseCommand):
    help = "Rebuild read models from the event log into fresh tables, then switch readers over atomically."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", choices=PROJECTION_SETS, help="projection set (default: all)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
        parser.add_argument("--source", choices=("auto", "outbox", "kafka"), default="auto",
                            help="what the live projections are fed by: the outbox bus (replay up to its "
                                 "checkpoint) or a Kafka consumer (replay what it applied); auto: "
                                 "kafka when projections is not in BUS_OUTBOX_SUBSCRIBERS")

    def handle(self, *args: Any, name: str | None = None, no_progress: bool = False, source: str = "auto",
               **options: Any) -> None:
        from_kafka = None if source == "auto" else source == "kafka"
        for set_name in [name] if name else list(PROJECTION_SETS):
            bar = None if no_progress else _Bar(self.stdout, set_name)
            try:
                summary = projection_rebuild(name=set_name, progress=bar.update if bar else None,
                                             from_kafka=from_kafka)
            except (LookupError, RuntimeError, TimeoutError) as exc:
                raise CommandError(str(exc)) from exc
            if bar is not None:
                bar.finish()
            rows = ", ".join(f"{table}={count}" for table, count in summary.rows.items())
            self.stdout.write(
                f"{summary.name}: replayed {summary.events} events into {summary.to_color}; "
                f"switched {summary.from_color} -> {summary.to_color} (generation {summary.generation}); {rows}"
            )


class _Bar:
    """A plain text progress bar: redrawn in place on a terminal, one line per 10% otherwise."""

    WIDTH = 30

    def __init__(self, out: Any, name: str) -> None:
        self.out, self.name, self.last_tenth = out, name, -1
        self.interactive = bool(getattr(out, "isatty", lambda: False)())

    def update(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        line = f"{self.name} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}"
        if self.interactive:
            self.out.write(f"\r{line}", ending="")
        elif int(share * 10) != self.last_tenth:
            self.last_tenth = int(share * 10)
            self.out.write(line)

    def finish(self) -> None:
        if self.interactive:
            self.out.write("")
