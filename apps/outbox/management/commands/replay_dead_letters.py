"""Replays open dead letters (after the cause is fixed), with progress and a summary. A staff action:
`--staff USERNAME --reason TEXT`, one AuditLog row per run."""

from __future__ import annotations

from typing import Any

from apps.core.public import AuditLog, StaffCommand
from apps.outbox.models import DeadLetter
from apps.outbox.progress import CommandProgress
from apps.outbox.retry import replay_dead_letter


class Command(StaffCommand):
    help = "Run the handler again for open dead letters."
    audit_action = AuditLog.Action.REPLAY_DEAD_LETTERS

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("ids", nargs="*", type=int, help="dead letter ids (default: all open)")
        parser.add_argument("--subscriber", help="only this subscriber's dead letters")

    def handle(self, *args: Any, **options: Any) -> None:
        target = f"dead letters {options['ids'] or 'all open'}" + (
            f" of {options['subscriber']}" if options["subscriber"] else ""
        )
        with self.audited(options, target=target) as detail:
            self._replay(options, detail)

    def _replay(self, options: dict[str, Any], detail: dict[str, Any]) -> None:
        letters = DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).order_by("id")
        if options["ids"]:
            letters = letters.filter(pk__in=options["ids"])
        if options["subscriber"]:
            letters = letters.filter(subscriber=options["subscriber"])
        total = letters.count()
        replayed = failed = 0
        with CommandProgress(self.stdout, "dead letters", total=total) as progress:
            for index, letter in enumerate(letters.iterator(), start=1):
                try:
                    replay_dead_letter(letter)
                    replayed += 1
                    outcome = "replayed"
                except Exception as exc:  # noqa: BLE001 - reported, the letter stays open
                    failed += 1
                    outcome = f"still failing: {exc!r}"
                progress.line(f"[{index}/{total}] {letter.subscriber} {letter.type} {letter.aggregate_id}: {outcome}")
                progress.advance()
            detail.update(considered=total, replayed=replayed, still_failing=failed)
            progress.summary(f"{replayed} replayed, {failed} still failing, {total} considered")
