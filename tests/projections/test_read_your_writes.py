"""Read-your-writes: with delivery left to a bus worker thread (inline dispatch off), a GET right after a
mutation's 202 already shows that mutation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from apps.outbox.worker import BusWorker
from tests.gateway.support import settle
from tests.helpers import act, create_escrow, pay


@pytest.fixture
def worker_only(transactional_db: None) -> Iterator[None]:
    worker = BusWorker(poll_seconds=0.2)

    def run() -> None:
        try:
            worker.run_forever()
        finally:
            connection.close()

    with override_settings(BUS_INLINE_DISPATCH=False, READ_YOUR_WRITES_SECONDS=2.0):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            worker.stop()
            thread.join(10)
    assert not thread.is_alive(), "the bus worker did not stop"


def _get(client: Any, escrow_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/escrows/{escrow_id}")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.postgres_only
@pytest.mark.parametrize("round_", range(3))
def test_a_get_after_each_202_shows_the_command(
    round_: int, worker_only: None, api_client: Any, buyer: Any, seller: Any, staff: Any
) -> None:
    as_buyer, as_seller, as_staff = api_client(buyer), api_client(seller), api_client(staff)

    created = create_escrow(as_buyer, seller=seller)
    escrow_id = created["escrow_id"]
    # the creator's next GET finds it (no 404 while the projection catches up)
    assert _get(as_buyer, escrow_id)["state"] == "AWAIT_FUNDS"

    # the payment is the provider's event, not this user's command: wait for the chain like a client would
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    assert _get(as_buyer, escrow_id)["state"] == "FUNDS_HELD"

    assert act(as_seller, escrow_id, "deliver").status_code == 202
    assert _get(as_seller, escrow_id)["state"] == "DELIVERED"

    assert act(as_buyer, escrow_id, "dispute", {"reason": "not as described"}).status_code == 202
    assert _get(as_buyer, escrow_id)["state"] == "DISPUTED"
    timeline = as_buyer.get(f"/api/v1/escrows/{escrow_id}/events").json()
    assert timeline[-1]["type"] == "EscrowDisputed"

    answer = act(as_staff, escrow_id, "resolve", {"outcome": "refund"})
    assert answer.status_code == 202
    # the resolution itself is visible; the refund settling is the provider's business
    assert _get(as_staff, escrow_id)["version"] >= 5
    types = [e["type"] for e in as_staff.get(f"/api/v1/escrows/{escrow_id}/events").json()]
    assert "EscrowDisputeResolved" in types and "EscrowRefundRequested" in types
