"""Random escrow histories driven through the public API, and snapshots of a colour's tables."""

from __future__ import annotations

import random
from typing import Any

from apps.projections.tables import Tables
from tests.gateway.support import settle
from tests.helpers import act, create_escrow, pay

# Each path is a list of (who, action, body); "pay" is the sandbox payment. Deals are proposed by the
# buyer; all but the first three are accepted by the seller first.
UNANSWERED: list[list[tuple[str, str, dict[str, Any] | None]]] = [
    [],
    [("seller", "decline", {"reason": "not at that price"})],
    [("buyer", "accept", None), ("buyer", "cancel", None), ("seller", "accept", None)],
]
ACCEPTED: list[list[tuple[str, str, dict[str, Any] | None]]] = [
    [],
    [("buyer", "cancel", None)],
    [("buyer", "pay", None)],
    [("buyer", "pay", None), ("seller", "cancel", None)],
    [("buyer", "pay", None), ("seller", "deliver", None)],
    [("buyer", "pay", None), ("seller", "deliver", None), ("buyer", "release", None)],
    [("buyer", "pay", None), ("buyer", "dispute", {"reason": "never arrived"})],
    [
        ("buyer", "pay", None),
        ("seller", "deliver", None),
        ("buyer", "dispute", {"reason": "wrong item"}),
        ("staff", "resolve", {"outcome": "refund"}),
    ],
    [
        ("buyer", "pay", None),
        ("seller", "deliver", None),
        ("seller", "dispute", {"reason": "buyer silent"}),
        ("staff", "resolve", {"outcome": "release"}),
    ],
    [
        ("buyer", "pay", None),
        ("buyer", "dispute", {"reason": "half broken"}),
        ("staff", "resolve", {"outcome": "split", "seller_amount": "40.00"}),
    ],
    # refused commands leave no events, but they are part of a realistic history
    [("seller", "release", None), ("buyer", "pay", None), ("buyer", "deliver", None)],
]
PATHS = UNANSWERED + [[("seller", "accept", None), *path] for path in ACCEPTED]


def random_histories(clients: dict[str, Any], seller: Any, *, seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    started: list[tuple[str, list[tuple[str, str, dict[str, Any] | None]]]] = []
    for _ in range(count):
        amount = f"{rng.randint(50, 99_999) // 100}.{rng.randint(0, 99):02d}"
        currency = "USD"  # the only currency the gateway accepts today
        created = create_escrow(
            clients["buyer"],
            seller=seller,
            amount=amount if int(amount.split(".")[0]) > 40 else "99.00",
            currency=currency,
            accept=False,
        )
        started.append((created["escrow_id"], list(rng.choice(PATHS))))
    # interleave the escrows' steps so the event log is not sorted by escrow
    while any(steps for _, steps in started):
        escrow_id, steps = rng.choice([item for item in started if item[1]])
        who, action, body = steps.pop(0)
        if action == "pay":
            pay(clients[who], escrow_id)
        else:
            act(clients[who], escrow_id, action, body)
    settle()
    return [escrow_id for escrow_id, _ in started]


def snapshot(tables: Tables) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of a colour, without surrogate keys, in a stable order."""

    def rows(model: Any, exclude: set[str], order: tuple[str, ...]) -> list[tuple[Any, ...]]:
        names = [f.attname for f in model._meta.concrete_fields if f.attname not in exclude]
        return [tuple(repr(row[n]) for n in names) for row in model.objects.order_by(*order).values(*names)]

    return {
        "views": rows(tables.view, set(), ("escrow_id",)),
        "timeline": rows(tables.timeline, {"id"}, ("escrow_id", "version")),
        "daily": rows(tables.daily, {"id"}, ("day", "currency")),
    }
