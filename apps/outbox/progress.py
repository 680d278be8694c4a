"""How long commands speak (relay_outbox, replay_outbox, rebuild_projections, consume, replay_dead_letters,
reprocess_webhooks, the benchmark): one way for all of them.

On a terminal, a rich progress bar (or a spinner with a count when the total is unknown) redrawn in place,
with the command's lines printed above it. Anywhere else (logs, CI, pipes, tests), plain lines: each
message as it comes, and the bar as `name [#####.....] done/total` once per tenth. Every run ends with one
summary line, the last thing the command prints.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TextIO

WIDTH = 30


def _stream(out: Any) -> TextIO:
    # Django's OutputWrapper keeps the real stream in `_out`.
    return getattr(out, "_out", out)


def is_terminal(out: Any) -> bool:
    isatty = getattr(_stream(out), "isatty", None)
    return bool(isatty and isatty())


class CommandProgress:
    """with CommandProgress(self.stdout, "relay", total=None) as progress:
    progress.line("..."); progress.advance(n); progress.summary("...")"""

    def __init__(self, out: Any, name: str, *, total: int | None = None, interactive: bool | None = None) -> None:
        self.out, self.name, self.total = out, name, total
        self.done = 0
        self.interactive = is_terminal(out) if interactive is None else interactive
        self._last_tenth = -1
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> CommandProgress:
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            console = Console(file=_stream(self.out))
            columns = (
                [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
                if self.total is not None
                else [SpinnerColumn(), TextColumn("{task.description}: {task.completed:.0f}"), TimeElapsedColumn()]
            )
            self._rich = Progress(*columns, console=console, transient=True)
            self._rich.start()
            self._task = self._rich.add_task(self.name, total=self.total)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def set_total(self, total: int) -> None:
        self.total = total
        if self._rich is not None:
            self._rich.update(self._task, total=total)

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def update(self, done: int, total: int | None = None) -> None:
        """Progress so far (and the total, when it is learnt late)."""
        if total is not None and total != self.total:
            self.set_total(total)
        self.done = done
        if self._rich is not None:
            self._rich.update(self._task, completed=done)
            return
        if self.total is None:
            return
        share = done / self.total if self.total else 1.0
        if int(share * 10) != self._last_tenth:
            self._last_tenth = int(share * 10)
            filled = int(share * WIDTH)
            self._write(f"{self.name} [{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{self.total}")

    def line(self, text: str) -> None:
        """A message from the command, above the bar on a terminal."""
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            self._write(text)

    def summary(self, text: str) -> None:
        """The last line of the run."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        self._write(text)

    def _write(self, text: str) -> None:
        # Django's OutputWrapper ends each write with a newline itself; a plain stream does not.
        self.out.write(text if hasattr(self.out, "style_func") else text + "\n")
        flush = getattr(self.out, "flush", None)
        if flush is not None:
            flush()
