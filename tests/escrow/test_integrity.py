"""The database guards of the escrow books: CheckConstraints on money, and the append-only audit log."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F

from apps.escrow.models import Escrow, EscrowEvent
from tests.escrow import given


@pytest.fixture(autouse=True)
def _no_inline_bus(settings: Any) -> None:
    settings.BUS_INLINE_DISPATCH = False


@pytest.mark.parametrize(
    "update",
    [
        {"held_minor": F("held_minor") + 1},  # money from nowhere
        {"paid_out_minor": F("paid_out_minor") + 1},  # paid out twice
        {"held_minor": F("held_minor") - given.AMOUNT - 1, "refunded_minor": F("refunded_minor") + given.AMOUNT + 1},
        {"pending_payout_minor": given.AMOUNT + 1},  # asking to pay out more than is held
        {"pending_refund_minor": -1},
    ],
    ids=["unbalanced-held", "unbalanced-paid-out", "negative-held", "pending-over-held", "negative-pending"],
)
def test_database_refuses_unbalanced_books(update: dict[str, Any], buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    before = given.snapshot(escrow_id)
    with pytest.raises(IntegrityError), transaction.atomic():
        Escrow.objects.filter(pk=escrow_id).update(**update)
    assert given.snapshot(escrow_id) == before


def test_audit_rows_cannot_be_changed_or_deleted_through_the_model(buyer: Any, seller: Any) -> None:
    escrow_id = given.propose(buyer=buyer, seller=seller)
    event = EscrowEvent.objects.get(escrow_id=escrow_id)
    event.type = "escrow.v1.EscrowReleased"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    assert EscrowEvent.objects.get(pk=event.pk).type == "escrow.v1.EscrowCreated"


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE escrow_escrowevent SET type = 'escrow.v1.EscrowReleased' WHERE id = %s",
        "DELETE FROM escrow_escrowevent WHERE id = %s",
    ],
    ids=["update", "delete"],
)
def test_postgres_trigger_refuses_raw_update_and_delete(sql: str, buyer: Any, seller: Any) -> None:
    escrow_id = given.propose(buyer=buyer, seller=seller)
    event = EscrowEvent.objects.get(escrow_id=escrow_id)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [event.pk])
    assert EscrowEvent.objects.get(pk=event.pk).type == "escrow.v1.EscrowCreated"


@pytest.mark.postgres_only
def test_postgres_trigger_refuses_a_queryset_update(buyer: Any, seller: Any) -> None:
    escrow_id = given.propose(buyer=buyer, seller=seller)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        EscrowEvent.objects.filter(escrow_id=escrow_id).update(actor_kind="staff")
    assert EscrowEvent.objects.get(escrow_id=escrow_id).actor_kind == "user"
