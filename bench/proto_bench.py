"""What protobuf encoding and decoding cost per command (betterproto2 is pure Python).

    make bench                                   # leaves a trade history in the database escrow_bench
    .venv/bin/python bench/proto_bench.py [--database escrow_bench] [--seconds 1]

Takes one outbox row of every message type from the benchmark's database (real payloads, as the
product wrote them), times encode (`bytes(message)`) and decode (`apps.outbox.messages.decode`, as the
bus does), and weighs them the way the product uses them: each row is encoded once when appended and
decoded once by every in-process subscriber with a handler for it (and again by each Kafka consumer
when apps run apart). Prints a markdown table and the cost per command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_op_us(fn, seconds: float) -> float:
    """Median of 5 timed batches, microseconds per call."""
    n = 1
    while True:  # size a batch to ~1/5 of the budget
        started = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - started > seconds / 25:
            break
        n *= 2
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="escrow_bench")
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per message type and direction")
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "escrow_project.settings")
    import django

    django.setup()
    from django.db.models import Count

    from apps.outbox import messages
    from apps.outbox.models import OutboxMessage
    from apps.outbox.public import outbox_subscribers

    counts = dict(OutboxMessage.objects.values_list("type").annotate(n=Count("id")))
    commands = sum(
        n
        for name, n in counts.items()
        if name in ("escrow.v1.CreateEscrow", "escrow.v1.MarkDelivered", "escrow.v1.ReleaseFunds")
    )
    commands += counts.get("escrow.v1.EscrowFundsHeld", 0)  # a sandbox pay is the fourth command of a trade
    if not commands:
        print(f"no trades in {args.database}: run `make bench` first", file=sys.stderr)
        return 2
    subscribers = outbox_subscribers()
    total_us = 0.0
    print("| message | rows per command | bytes | encode µs | decode µs | decoded by |")
    print("|---|---|---|---|---|---|")
    for name in sorted(counts):
        row = OutboxMessage.objects.filter(type=name).order_by("id").first()
        payload = bytes(row.payload)
        message = messages.decode(name, payload)
        readers = sum(1 for sub in subscribers if sub.handler_for(name) is not None)
        encode = per_op_us(lambda m=message: bytes(m), args.seconds)
        decode = per_op_us(lambda n=name, p=payload: messages.decode(n, p), args.seconds)
        per_command = counts[name] / commands
        total_us += per_command * (encode + readers * decode)
        print(f"| {name} | {per_command:.2f} | {len(payload)} | {encode:.1f} | {decode:.1f} | {readers} |", flush=True)
    print()
    print(
        f"{sum(counts.values())} outbox rows for {commands} commands in {args.database}: protobuf costs "
        f"{total_us:.0f} µs of CPU per command (encode once, decode once per in-process subscriber with a handler)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
