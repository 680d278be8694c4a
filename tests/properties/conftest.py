from __future__ import annotations

from typing import Any

from tests.properties.figures import collected


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures = collected()
    if figures:
        terminalreporter.section("reliability figures")
        for suite, values in sorted(figures.items()):
            terminalreporter.write_line(f"{suite}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
