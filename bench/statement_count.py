"""Statements and database transactions per command, from PostgreSQL's statement log, for one bench run.

Run the bench with every statement logged, its progress lines kept, then count the load window:

    PGOPTIONS="-c log_min_duration_statement=0" .venv/bin/python bench/run.py --database escrow_bench \\
        --duration 15 --ceiling-seconds 2 --commands-per-s 20 --queries-per-s 0 2> bench.err
    .venv/bin/python bench/statement_count.py /var/log/postgresql/postgresql-15-main.log escrow_bench bench.err

The window is the open-model load (between the bench's "open-model load" and "read-path maximum" progress
lines, whole seconds); the log's line prefix must carry the pid and user@database (`%m [%p] %q%u@%d `,
Debian's default). The bus worker's backends are the ones that take the drain lock (pg_try_advisory_lock);
a transaction is a BEGIN..COMMIT block or a statement run outside one (autocommit). Commands are the 202
answers of the run (from the bench's JSON beside its markdown, or given as a fourth argument).
"""

from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path


def window(stderr: str) -> tuple[str, str]:
    lines = Path(stderr).read_text().splitlines()

    def at(pattern: str) -> str:
        for line in lines:
            match = re.search(r"\[bench (\d\d:\d\d:\d\d)\] " + pattern, line)
            if match:
                return match.group(1)
        raise SystemExit(f"no '{pattern}' progress line in {stderr}")

    return at("open-model load"), at("read-path maximum")


def commands_of(stderr: str) -> int:
    written = re.findall(r"wrote bench/results/(\S+)\.md", Path(stderr).read_text())
    if not written:
        raise SystemExit("give the number of commands as a fourth argument")
    result = json.loads((Path(__file__).parent / "results" / f"{written[-1]}.json").read_text())
    load = result["load"]
    return round(load["commands_per_s"] * load["elapsed_s"])


def main(log: str, database: str, stderr: str, commands: int) -> None:
    start, end = window(stderr)
    per_backend: dict[str, list[str]] = collections.defaultdict(list)
    with open(log, errors="replace") as lines:
        for line in lines:
            if f"@{database} " not in line or "duration:" not in line or not start <= line[11:19] < end:
                continue
            pid = line.split("[", 1)[1].split("]", 1)[0]
            sql = re.split(r"(?:statement|execute [^:]*): ", line, maxsplit=1)[-1].strip().upper()
            per_backend[pid].append(sql)
    bus = {pid for pid, sqls in per_backend.items() if any("PG_TRY_ADVISORY_LOCK" in q for q in sqls)}

    def tally(pids: set[str]) -> tuple[int, int, collections.Counter[str]]:
        statements = transactions = 0
        kinds: collections.Counter[str] = collections.Counter()
        for pid in pids:
            inside = False
            for sql in per_backend[pid]:
                statements += 1
                kinds[sql.split()[0] if sql else "?"] += 1
                if sql.startswith("BEGIN"):
                    inside, transactions = True, transactions + 1
                elif sql.startswith(("COMMIT", "ROLLBACK")) and not sql.startswith("ROLLBACK TO"):
                    inside = False
                elif not inside:
                    transactions += 1
        return statements, transactions, kinds

    print(f"load window {start}-{end} UTC, {commands} commands")  # noqa: T201
    for name, pids in (("bus worker", bus), ("web and the rest", set(per_backend) - bus), ("all", set(per_backend))):
        statements, transactions, kinds = tally(pids)
        print(  # noqa: T201
            f"{name}: {statements / commands:.1f} statements and {transactions / commands:.1f} transactions"
            f" per command ({statements}, {transactions}); {dict(kinds.most_common(8))}"
        )


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    log, database, stderr = sys.argv[1:4]
    main(log, database, stderr, int(sys.argv[4]) if len(sys.argv) == 5 else commands_of(stderr))
