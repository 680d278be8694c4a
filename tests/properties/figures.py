"""Figures of the reliability suites (histories generated, hostile inputs tried), printed at the end of
the run and kept in bench/results/reliability.json for docs/reliability.md."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES_FILE = Path(
    os.environ.get(
        "RELIABILITY_FIGURES_FILE", Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"
    )
)
_collected: dict[str, dict[str, Any]] = {}


def record_figures(suite: str, figures: dict[str, Any]) -> None:
    _collected[suite] = {**_collected.get(suite, {}), **figures}
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    existing: dict[str, Any] = {}
    if FIGURES_FILE.exists():
        try:
            existing = json.loads(FIGURES_FILE.read_text())
        except ValueError:
            existing = {}
    existing[suite] = _collected[suite]
    FIGURES_FILE.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def collected() -> dict[str, dict[str, Any]]:
    return dict(_collected)
