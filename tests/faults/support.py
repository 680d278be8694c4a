"""What the fault tests share: running calls truly at once, and checking that an escrow's records agree
with each other after a fault (state, audit log, outbox, processed commands, money)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections
from django.db.models import Count

from apps.escrow.models import Escrow, EscrowEvent, ProcessedCommand
from apps.outbox.models import OutboxMessage, ProcessedMessage
from tests.gateway.support import settle
from tests.helpers import create_escrow, pay

PAYMENT_COMMANDS = ("payments.v1.TransferToSeller", "payments.v1.InitiateRefund")


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Runs each call on its own thread (and so its own database connection), released together by a
    barrier; returns results in order, or the exception a call raised."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        try:
            barrier.wait(30)
            return call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc
        finally:
            connections.close_all()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(run, call) for call in calls]]


def funded_escrow(as_buyer: Any, seller: Any) -> str:
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    settle()
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    assert Escrow.objects.get(pk=escrow_id).state == "FUNDS_HELD"
    return escrow_id


def payment_commands(escrow_id: str) -> dict[str, int]:
    rows = OutboxMessage.objects.filter(aggregate_id=escrow_id, type__in=PAYMENT_COMMANDS)
    return {t.rpartition(".")[2]: n for t, n in rows.values_list("type").annotate(n=Count("id"))}


def assert_records_agree(escrow_id: str) -> None:
    """No half-applied command: the escrow's version is its last audit event, versions are contiguous,
    every audit event has its outbox row, every processed command has its outbox row (and vice versa),
    and the books balance."""
    escrow = Escrow.objects.get(pk=escrow_id)
    versions = list(
        EscrowEvent.objects.filter(escrow_id=escrow_id).order_by("version").values_list("version", flat=True)
    )
    assert versions == list(range(1, escrow.version + 1)), (versions, escrow.version)
    event_ids = set(EscrowEvent.objects.filter(escrow_id=escrow_id).values_list("event_id", flat=True))
    outbox_ids = set(OutboxMessage.objects.filter(aggregate_id=escrow_id).values_list("event_id", flat=True))
    assert event_ids <= outbox_ids, "an audit event without its outbox row"
    commands = set(ProcessedCommand.objects.filter(escrow_id=escrow_id).values_list("command_id", flat=True))
    command_rows = set(
        OutboxMessage.objects.filter(aggregate_id=escrow_id, topic="escrow.commands.v1").values_list(
            "event_id", flat=True
        )
    )
    assert commands == command_rows, "a processed command without its outbox row, or the reverse"
    assert escrow.received_minor == (
        escrow.held_minor + escrow.paid_out_minor + escrow.refunded_minor + escrow.fee_minor
    )
    for name in ("received_minor", "held_minor", "paid_out_minor", "refunded_minor", "fee_minor"):
        assert getattr(escrow, name) >= 0, name


def assert_nothing_twice() -> None:
    assert not EscrowEvent.objects.values("event_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not OutboxMessage.objects.values("event_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not (
        ProcessedMessage.objects.values("subscriber", "event_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    )


def new_key() -> str:
    return str(uuid.uuid4())
