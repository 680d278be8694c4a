"""The benchmark's own arithmetic and its database-ceiling script (no timings are measured here)."""

from __future__ import annotations

import pytest

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
        "INTO pgb_command",
        "INTO pgb_event",
        "UPDATE pgb_escrow",
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


def test_scale_steps_come_from_the_core_count_not_a_constant():
    assert run.scale_steps(1) == [1]
    assert run.scale_steps(2) == [1, 2]
    assert run.scale_steps(6) == [1, 2, 4, 6]
    assert run.scale_steps(16) == [1, 2, 4, 8, 16]


def fed(topology: run.Topology) -> list[str]:
    """Every app the step feeds, from the outbox bus or from Kafka, as often as it is fed."""
    return sorted([name for group in topology.bus_groups for name in group.split(",")] + list(topology.consumers))


def test_the_outbox_topology_feeds_every_subscriber_once_with_half_as_many_bus_processes():
    for web, bus in ((1, 1), (2, 1), (4, 2), (8, 4), (16, 4)):  # at most one bus process per subscriber
        topology = run.outbox_topology(web)
        assert len(topology.bus_groups) == bus
        assert fed(topology) == sorted(run.SUBSCRIBERS)
        assert not topology.kafka


def test_the_kafka_topology_splits_the_named_apps_out_and_adds_consumers_as_web_processes_grow():
    split = ("payments", "projections", "notifications")
    for web, per_app in ((1, 1), (2, 1), (4, 1), (8, 2), (16, 4), (96, 12)):  # capped at the partitions
        topology = run.kafka_topology(web, split, partitions=12)
        assert topology.consumers == dict.fromkeys(split, per_app)
        assert topology.bus_groups == ["escrow"]
        assert topology.in_process == "escrow"
        # Each app fed from exactly one source: never both the outbox bus and a consumer group.
        assert fed(topology) == sorted(run.SUBSCRIBERS)
        assert topology.label.startswith(f"{web} x 1 + relay + {3 * per_app} consume")
    everything = run.kafka_topology(4, run.SUBSCRIBERS, partitions=12)
    assert everything.bus_groups == [] and everything.in_process == ""


def test_the_kafka_topology_refuses_an_unknown_app():
    with pytest.raises(ValueError, match="ledger"):
        run.kafka_topology(2, ("ledger",), partitions=12)
    with pytest.raises(ValueError):
        run.kafka_topology(2, (), partitions=12)


def test_the_scale_report_shows_both_topologies_and_their_cpu_per_command():
    commands = {
        "offered_per_s": 150,
        "accepted_per_s": 90.0,
        "settled_per_s": 80.0,
        "latency": {"p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0},
        "command_to_event": {"p50_ms": 40.0, "p95_ms": 50.0, "p99_ms": 60.0},
        "per_cpu_second": 60.0,
        "errors": {"create: TimeoutError": 2, "create: HTTP -1": 2},
        "failed": 2,
        "early": {"pay": 3, "accept": 1},
        "cpu_ms_per_command": {"web": 7.0, "bus": 5.0, "relay": 0.0, "broker": 0.0, "database": 4.0},
    }
    result = {
        "started_at": "x",
        "cores": 2,
        "load_average": "1",
        "threads": 4,
        "offered_per_web": 150,
        "seconds": 10,
        "command": "bench/run.py --scale-kafka",
        "kafka": {"broker": "Tansu", "broker_measured": True, "split": ["projections"]},
        "steps": [
            {
                "topology": "outbox",
                "label": "1 x 1",
                "web_processes": 1,
                "bus_processes": 1,
                "commands": commands,
                "reads": {"requests_per_s": 600.0, "per_cpu_second": 550.0},
            },
            {
                "topology": "kafka",
                "label": "1 x 1 + relay + 1 consume (projections)",
                "web_processes": 1,
                "bus_processes": 1,
                "commands": {
                    **commands,
                    "cpu_ms_per_command": {**commands["cpu_ms_per_command"], "relay": 1.5, "broker": 2.5},
                },
                "reads": None,
            },
        ],
    }
    markdown = run.render_scale(result)
    assert (
        "| 1 x 1 | 90.0 | 80.0 | 10.0 / 20.0 / 30.0 | 40.0 / 50.0 / 60.0 | 60.0 | 7.0 / 5.0 / 0.0 / 0.0 / 4.0 | 600.0 |"
        in markdown
    )
    assert "| 1 x 1 + relay + 1 consume (projections) |" in markdown
    assert "7.0 / 5.0 / 1.5 / 2.5 / 4.0 | - | - | 2; 4 |" in markdown
    assert "broker's CPU is counted" in markdown
