"""Replays open dead letters (after the cause is fixed), with progress and a summary."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.outbox import bus
from apps.outbox.models import DeadLetter
from apps.outbox.progress import CommandProgress


class Command(BaseCommand):
    help = "Run the handler again for open dead letters."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="dead letter ids (default: all open)")
        parser.add_argument("--subscriber", help="only this subscriber's dead letters")

    def handle(self, *args: Any, **options: Any) -> None:
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
                    bus.replay_dead_letter(letter)
                    replayed += 1
                    outcome = "replayed"
                except Exception as exc:  # noqa: BLE001 - reported, the letter stays open
                    failed += 1
                    outcome = f"still failing: {exc!r}"
                progress.line(f"[{index}/{total}] {letter.subscriber} {letter.type} {letter.aggregate_id}: {outcome}")
                progress.advance()
            progress.summary(f"{replayed} replayed, {failed} still failing, {total} considered")
