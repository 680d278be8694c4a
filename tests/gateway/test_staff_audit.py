"""A staff action through the REST API writes the one staff AuditLog, in the same transaction as the
command: a refused command leaves no row, a replayed request no second one, and a party's own action
none at all."""

from __future__ import annotations

from typing import Any

from apps.core.public import AuditLog
from tests.gateway.support import create_settled, settle
from tests.helpers import act, pay


def disputed(api_client: Any, buyer: Any, seller: Any) -> str:
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    assert act(api_client(seller), escrow_id, "dispute", {"reason": "never delivered"}).status_code == 202
    settle()
    return escrow_id


def test_a_resolve_through_the_api_is_audited_once(api_client, buyer, seller, staff):
    escrow_id = disputed(api_client, buyer, seller)
    as_staff = api_client(staff)
    body = {"outcome": "refund", "note": "seller admitted it never shipped"}

    answer = act(as_staff, escrow_id, "resolve", body, HTTP_IDEMPOTENCY_KEY="resolve-1")
    again = act(as_staff, escrow_id, "resolve", body, HTTP_IDEMPOTENCY_KEY="resolve-1")

    assert answer.status_code == 202 and again["Idempotent-Replayed"] == "true"
    [entry] = AuditLog.objects.filter(escrow_id=escrow_id)
    assert (entry.actor_id, entry.action, entry.reason) == (
        staff.pk,
        "resolve_dispute",
        "seller admitted it never shipped",
    )
    assert str(entry.command_id) == answer.json()["command_id"]
    assert entry.detail["outcome"] == "refund" and entry.detail["edge"] == "api"


def test_a_refused_staff_command_leaves_no_audit_row(api_client, buyer, seller, staff):
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]  # no dispute open

    refused = act(api_client(staff), escrow_id, "resolve", {"outcome": "refund", "note": "x"})

    assert refused.status_code == 409
    assert not AuditLog.objects.exists()


def test_a_resolve_without_a_note_is_audited_with_the_edge_as_its_reason(api_client, buyer, seller, staff):
    escrow_id = disputed(api_client, buyer, seller)

    assert act(api_client(staff), escrow_id, "resolve", {"outcome": "release"}).status_code == 202

    [entry] = AuditLog.objects.filter(escrow_id=escrow_id)
    assert entry.reason == "resolve_dispute through the REST API"


def test_a_partys_own_action_is_not_a_staff_action(api_client, buyer, seller):
    as_buyer = api_client(buyer)
    escrow_id = create_settled(as_buyer, seller=seller)["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()

    assert act(api_client(seller), escrow_id, "dispute", {"reason": "late"}).status_code == 202

    assert not AuditLog.objects.exists()
