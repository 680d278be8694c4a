"""manage.py rebuild_projections [NAME] --staff USERNAME --reason TEXT: refill the idle colour from the event
log and switch over. A staff action: one AuditLog row per run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.core.public import AuditLog, StaffCommand
from apps.outbox.public import CommandProgress
from apps.projections.rebuild import projection_rebuild
from apps.projections.tables import PROJECTION_SETS


class Command(StaffCommand):
    help = "Rebuild read models from the event log into fresh tables, then switch readers over atomically."
    audit_action = AuditLog.Action.REBUILD_PROJECTIONS

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("name", nargs="?", choices=PROJECTION_SETS, help="projection set (default: all)")
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bar, only the summary (plain lines are used anyway when not a terminal)",
        )
        parser.add_argument(
            "--source",
            choices=("auto", "outbox", "kafka"),
            default="auto",
            help="what the live projections are fed by: the outbox bus (replay up to its "
            "checkpoint) or a Kafka consumer (replay what it applied); auto: "
            "kafka when projections is not in BUS_OUTBOX_SUBSCRIBERS",
        )

    def handle(
        self, *args: Any, name: str | None = None, no_progress: bool = False, source: str = "auto", **options: Any
    ) -> None:
        with self.audited(options, target=f"projections {name or 'all'}") as detail:
            detail.update(source=source, rebuilt=[])
            self._rebuild(name=name, no_progress=no_progress, source=source, detail=detail)

    def _rebuild(self, *, name: str | None, no_progress: bool, source: str, detail: dict[str, Any]) -> None:
        from_kafka = None if source == "auto" else source == "kafka"
        for set_name in [name] if name else list(PROJECTION_SETS):
            with CommandProgress(
                self.stdout, set_name, total=0, interactive=False if no_progress else None
            ) as progress:
                try:
                    summary = projection_rebuild(
                        name=set_name, progress=None if no_progress else progress.update, from_kafka=from_kafka
                    )
                except (LookupError, RuntimeError, TimeoutError) as exc:
                    raise CommandError(str(exc)) from exc
                detail["rebuilt"].append(
                    {
                        "name": summary.name,
                        "events": summary.events,
                        "generation": summary.generation,
                        "switched": f"{summary.from_color} -> {summary.to_color}",
                        "rows": dict(summary.rows),
                    }
                )
                rows = ", ".join(f"{table}={count}" for table, count in summary.rows.items())
                progress.summary(
                    f"{summary.name}: replayed {summary.events} events into {summary.to_color}; "
                    f"switched {summary.from_color} -> {summary.to_color} (generation {summary.generation}); {rows}"
                )
