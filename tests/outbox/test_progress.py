"""Long commands speak one way (apps/outbox/progress.py): plain lines when not a terminal, a bar on one,
a summary line last; and every option of every long command says what it does."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import get_commands, load_command_class
from django.core.management.base import OutputWrapper

from apps.outbox.progress import CommandProgress

LONG_COMMANDS = (
    "relay_outbox",
    "replay_outbox",
    "rebuild_projections",
    "consume",
    "replay_dead_letters",
    "reprocess_webhooks",
    "run_bus",
    "serve",
)


def test_plain_lines_a_bar_per_tenth_and_the_summary_last() -> None:
    out = io.StringIO()
    with CommandProgress(OutputWrapper(out), "letters", total=20) as progress:
        for n in range(20):
            progress.line(f"item {n}")
            progress.advance()
        progress.summary("20 replayed, 0 still failing")
    lines = out.getvalue().splitlines()
    bars = [line for line in lines if line.startswith("letters [")]
    assert bars[0] == "letters [..............................] 0/20" or bars[0].startswith("letters [#")
    assert bars[-1] == "letters [##############################] 20/20"
    assert len(bars) <= 11  # one per tenth, not one per item
    assert sum(line.startswith("item ") for line in lines) == 20
    assert lines[-1] == "20 replayed, 0 still failing"
    assert "\x1b[" not in out.getvalue()  # no terminal escapes in logs


def test_an_unknown_total_prints_only_lines_and_the_summary() -> None:
    out = io.StringIO()
    with CommandProgress(out, "published") as progress:
        progress.update(5)
        progress.line("relay active")
        progress.summary("relay stopped: published=5")
    assert out.getvalue() == "relay active\nrelay stopped: published=5\n"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_drawn_and_the_summary_is_the_last_line() -> None:
    out = FakeTerminal()
    with CommandProgress(OutputWrapper(out), "rebuild", total=3) as progress:
        assert progress.interactive
        for _ in range(3):
            progress.advance()
        progress.line("halfway note")
        progress.summary("rebuild: replayed 3 events")
    text = out.getvalue()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "\x1b[" in text and "3/3" in plain  # drawn in place, then cleared
    assert "halfway note" in plain
    assert plain.rstrip("\n").splitlines()[-1] == "rebuild: replayed 3 events"


@pytest.mark.parametrize("name", LONG_COMMANDS)
def test_every_option_has_help_text(name: str) -> None:
    command = load_command_class(get_commands()[name], name)
    parser = command.create_parser("manage.py", name)
    ours = [
        a
        for a in parser._actions
        if a.dest
        not in {
            "help",
            "version",
            "verbosity",
            "settings",
            "pythonpath",
            "traceback",
            "no_color",
            "force_color",
            "skip_checks",
        }
    ]
    assert ours, name
    missing = [a.dest for a in ours if not a.help]
    assert not missing, f"{name}: options without help: {missing}"
