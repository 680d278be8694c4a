"""rebuild_projections: a rebuilt colour equals the incrementally built one after random histories; the
switch is atomic and readers keep being served during it."""

from __future__ import annotations

import io
import threading
from collections import Counter
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum

from apps.escrow.models import Escrow
from apps.projections import selectors
from apps.projections.models import BLUE, GREEN, ActiveGeneration, ProjectionRebuild
from apps.projections.rebuild import projection_rebuild
from apps.projections.tables import active_color, tables_for
from tests.gateway.support import settle
from tests.helpers import as_staff, state_of
from tests.projections.support import random_histories, snapshot


@pytest.fixture
def clients(api_client: Any, buyer: Any, seller: Any, staff: Any) -> dict[str, Any]:
    return {"buyer": api_client(buyer), "seller": api_client(seller), "staff": api_client(staff)}


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_a_rebuilt_colour_equals_the_incremental_one(seed: int, clients: dict[str, Any], seller: Any) -> None:
    # given random interleaved histories, projected incrementally into blue by the bus
    escrow_ids = random_histories(clients, seller, seed=seed, count=12)
    assert active_color() == BLUE
    incremental = snapshot(tables_for(BLUE))
    assert len(incremental["views"]) == len(escrow_ids)
    assert tables_for(GREEN).view.objects.count() == 0

    # when green is rebuilt from the event log
    summary = projection_rebuild()

    # then it is row for row what blue holds, readers follow the pointer, and blue is left untouched
    assert (summary.from_color, summary.to_color, summary.generation) == (BLUE, GREEN, 2)
    assert summary.events == len(incremental["timeline"])
    assert active_color() == GREEN
    assert snapshot(tables_for(GREEN)) == incremental
    assert snapshot(tables_for(BLUE)) == incremental
    for escrow_id in escrow_ids:
        assert state_of(clients["buyer"], escrow_id) == Escrow.objects.get(pk=escrow_id).state

    # and the bus now feeds green: a new command shows up there and not in blue
    pending = [e for e in escrow_ids if Escrow.objects.get(pk=e).state == "AWAIT_FUNDS"]
    if pending:
        assert clients["buyer"].post(f"/api/v1/escrows/{pending[0]}/cancel", {}, format="json").status_code == 202
        settle()
        assert tables_for(GREEN).view.objects.get(escrow_id=pending[0]).state == "CANCELLED"
        assert tables_for(BLUE).view.objects.get(escrow_id=pending[0]).state == "AWAIT_FUNDS"

    # and rebuilding again goes back to blue, equal to what green became
    latest = snapshot(tables_for(GREEN))
    again = projection_rebuild()
    assert (again.to_color, again.generation) == (BLUE, 3)
    assert snapshot(tables_for(BLUE)) == latest
    assert ProjectionRebuild.objects.count() == 2


def test_daily_figures_agree_with_the_escrow_books(clients: dict[str, Any], seller: Any) -> None:
    random_histories(clients, seller, seed=99, count=15)
    figures = list(selectors.ops_daily_figures())
    assert figures, "nothing was held"
    for currency in {f.currency for f in figures}:
        books = Escrow.objects.filter(currency=currency).aggregate(
            paid=Sum("paid_out_minor"),
            fee=Sum("fee_minor"),
            refunded=Sum("refunded_minor"),
            received=Sum("received_minor"),
        )
        mine = [f for f in figures if f.currency == currency]
        assert sum(f.released_minor for f in mine) == books["paid"] + books["fee"]
        assert sum(f.refunded_minor for f in mine) == books["refunded"]
        assert sum(f.held_minor for f in mine) == books["received"]


def test_the_command_shows_progress_and_a_summary(clients: dict[str, Any], seller: Any) -> None:
    random_histories(clients, seller, seed=3, count=4)
    out = io.StringIO()
    call_command("rebuild_projections", "escrows", *as_staff(), stdout=out)
    text = out.getvalue()
    assert "escrows [" in text and "##############################]" in text
    assert "switched blue -> green (generation 2)" in text
    assert "EscrowViewGreen=4" in text


def test_an_unknown_name_is_refused_and_switches_nothing(clients: dict[str, Any], seller: Any) -> None:
    random_histories(clients, seller, seed=4, count=2)
    with pytest.raises(CommandError):
        call_command("rebuild_projections", "nonsense", *as_staff(), stdout=io.StringIO())
    assert active_color() == BLUE
    assert not ActiveGeneration.objects.filter(color=GREEN).exists()
    assert tables_for(GREEN).view.objects.count() == 0


@pytest.mark.postgres_only
def test_no_get_fails_while_a_rebuild_runs(clients: dict[str, Any], api_client: Any, buyer: Any, seller: Any) -> None:
    """Readers in other threads (their own connections) keep reading while rebuilds replay and flip."""
    escrow_ids = random_histories(clients, seller, seed=11, count=10)
    expected = {e: Escrow.objects.get(pk=e).state for e in escrow_ids}
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    wrong: list[Any] = []

    def reader() -> None:
        client = api_client(buyer)
        try:
            while not stop.is_set():
                for escrow_id in escrow_ids:
                    detail = client.get(f"/api/v1/escrows/{escrow_id}")
                    listing = client.get("/api/v1/escrows?limit=100")
                    outcomes[f"{detail.status_code}/{listing.status_code}"] += 1
                    if detail.status_code != 200 or detail.json()["state"] != expected[escrow_id]:
                        wrong.append((detail.status_code, detail.content[:200]))
                    elif listing.json()["count"] != len(escrow_ids):
                        wrong.append(("list", listing.json()["count"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        colors = [projection_rebuild().to_color for _ in range(4)]
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert colors == [GREEN, BLUE, GREEN, BLUE]
    assert not wrong, wrong[:5]
    assert sum(outcomes.values()) > 0 and set(outcomes) == {"200/200"}
