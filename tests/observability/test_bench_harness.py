"""The benchmark's own arithmetic and its database-ceiling script (no timings are measured here)."""

from __future__ import annotations

from bench import run
from tests.observability.test_query_counts import DELIVER_TRANSACTION


def pgbench_statements(script: str) -> list[str]:
    """pgbench's own splitting: a meta-command is one line; SQL ends at ';' or at a \\gset."""
    statements, current = [], []
    for line in script.strip().splitlines():
        if line.startswith("\\") and not current:
            statements.append(line)
            continue
        current.append(line.strip())
        if line.rstrip().endswith((";", "\\gset")):
            statements.append(" ".join(current).rstrip(";"))
            current = []
    assert not current, "unterminated statement"
    return statements


def test_pgbench_replays_the_pinned_statements_of_one_command():
    statements = pgbench_statements(run.PGBENCH_SCRIPT)
    body = statements[statements.index("BEGIN") + 1 : statements.index("COMMIT")]
    # The first statement picks an escrow by number; the real command already knows its id.
    assert "\\gset" in body[0]
    replayed = body[1:]
    assert len(replayed) == len(DELIVER_TRANSACTION)
    kinds = [
        "advisory_xact_lock",
        "FOR UPDATE",
        "pgb_command",
        "INTO pgb_event",
        "INTO pgb_outbox",
        "pg_notify",
        "UPDATE pgb_escrow",
        "INTO pgb_command",
        "INTO pgb_outbox",
    ]
    for statement, kind in zip(replayed, kinds, strict=True):
        assert kind in statement, (kind, statement)


def test_percentiles_are_nearest_rank_in_milliseconds():
    figures = run.percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert figures == {"n": 100, "p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert run.percentiles([])["p95_ms"] is None


def test_ratio_reports_missing_ceilings_instead_of_dividing_by_zero():
    assert run.ratio(50, 200) == "25%"
    assert run.ratio(50, None) == "n/a"
    assert run.ratio(None, 200) == "n/a"
