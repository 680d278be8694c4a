"""The dispute desk: the queue, the timeline and statements, Resolve and Add note through the command
dispatch with an AuditLog row each; refused and unauthorised attempts change nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from apps.escrow.models import Escrow, EscrowEvent
from apps.gateway.management.commands.setup_staff_groups import GROUP_PERMISSIONS
from apps.gateway.models import AuditLog
from apps.outbox.models import OutboxMessage
from tests.admin.conftest import logged_in
from tests.gateway.support import settle


def footprint(escrow_id: str) -> tuple[Any, ...]:
    settle()
    escrow = Escrow.objects.get(pk=escrow_id)
    return (
        escrow.state,
        escrow.version,
        escrow.held_minor,
        EscrowEvent.objects.count(),
        OutboxMessage.objects.count(),
        AuditLog.objects.count(),
    )


def test_the_queue_lists_open_disputes_oldest_first(
    agent: Any, disputed: str, api_client: Any, buyer: Any, seller: Any
) -> None:
    from tests.helpers import act, create_escrow, pay

    as_buyer = api_client(buyer)
    later = create_escrow(as_buyer, seller=seller)["escrow_id"]
    pay(as_buyer, later)
    settle()
    act(as_buyer, later, "dispute", {"reason": "second"})
    settle()
    html = logged_in(agent).get("/admin/escrow/escrow/disputes/").content.decode()
    assert disputed in html and later in html
    assert html.index(disputed) < html.index(later)


def test_the_desk_shows_statements_and_the_full_timeline(agent: Any, disputed: str) -> None:
    response = logged_in(agent).get(f"/admin/escrow/escrow/{disputed}/dispute/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Buyer" in html and "the item was a duplicate" in html
    for event in ("EscrowCreated", "EscrowFundsHeld", "EscrowDelivered", "EscrowDisputed"):
        assert f"escrow.v1.{event}" in html
    assert 'id="resolve-form"' in html
    assert 'name="state"' not in html and 'name="amount_minor"' not in html


def test_an_agent_resolves_a_split_and_it_is_audited(agent: Any, disputed: str) -> None:
    response = logged_in(agent).post(
        f"/admin/escrow/escrow/{disputed}/dispute/",
        {"action": "resolve", "outcome": "split", "seller_amount": "40.00", "reason": "photos show half the set"},
    )
    assert response.status_code == 302
    settle()
    escrow = Escrow.objects.get(pk=disputed)
    assert escrow.state == "RELEASED"
    assert escrow.paid_out_minor + escrow.fee_minor == 4000 and escrow.refunded_minor == 6000
    resolved = EscrowEvent.objects.get(escrow_id=disputed, type="escrow.v1.EscrowDisputeResolved")
    assert resolved.actor_kind == "staff" and resolved.actor_id == agent.pk
    entry = AuditLog.objects.get()
    assert (entry.actor, entry.action, str(entry.escrow_id)) == (agent, "resolve_dispute", disputed)
    assert entry.reason == "photos show half the set" and entry.command_id == resolved.command_id
    assert entry.detail["outcome"] == "split" and entry.detail["seller_amount_minor"] == 4000


@pytest.mark.parametrize(
    "form",
    [
        {"outcome": "split", "seller_amount": "100.00", "reason": "all of it"},  # not less than the amount
        {"outcome": "split", "seller_amount": "-1", "reason": "negative"},
        {"outcome": "split", "seller_amount": "", "reason": "no amount"},
        {"outcome": "release", "seller_amount": "10.00", "reason": "amount on a release"},
        {"outcome": "release", "reason": "   "},
        {"outcome": "burn", "reason": "unknown outcome"},
    ],
)
def test_bad_resolutions_change_nothing(form: dict[str, str], agent: Any, disputed: str) -> None:
    before = footprint(disputed)
    response = logged_in(agent).post(f"/admin/escrow/escrow/{disputed}/dispute/", {"action": "resolve", **form})
    assert response.status_code == 400
    assert footprint(disputed) == before


def test_resolving_twice_is_refused_the_second_time(agent: Any, disputed: str) -> None:
    client = logged_in(agent)
    url = f"/admin/escrow/escrow/{disputed}/dispute/"
    assert client.post(url, {"action": "resolve", "outcome": "refund", "reason": "no delivery"}).status_code == 302
    before = footprint(disputed)
    second = client.post(url, {"action": "resolve", "outcome": "release", "reason": "changed my mind"})
    assert second.status_code == 400 and "Refused" in second.content.decode()
    assert footprint(disputed) == before
    assert AuditLog.objects.count() == 1


def test_ops_cannot_resolve_and_nothing_changes(ops_user: Any, disputed: str) -> None:
    before = footprint(disputed)
    client = logged_in(ops_user)
    page = client.get(f"/admin/escrow/escrow/{disputed}/dispute/")
    assert page.status_code == 200 and 'id="resolve-form"' not in page.content.decode()
    response = client.post(
        f"/admin/escrow/escrow/{disputed}/dispute/",
        {"action": "resolve", "outcome": "release", "reason": "ops shortcut"},
    )
    assert response.status_code == 403
    assert footprint(disputed) == before


def test_a_note_is_audited_and_shown(agent: Any, disputed: str) -> None:
    client = logged_in(agent)
    url = f"/admin/escrow/escrow/{disputed}/dispute/"
    assert client.post(url, {"action": "note", "note": "asked the seller for a trade screenshot"}).status_code == 302
    entry = AuditLog.objects.get()
    assert (entry.action, entry.actor) == ("add_note", agent)
    assert "asked the seller for a trade screenshot" in client.get(url).content.decode()
    empty = client.post(url, {"action": "note", "note": ""})
    assert empty.status_code == 400 and AuditLog.objects.count() == 1


def test_audit_rows_cannot_be_changed(agent: Any, disputed: str) -> None:
    logged_in(agent).post(f"/admin/escrow/escrow/{disputed}/dispute/", {"action": "note", "note": "x"})
    entry = AuditLog.objects.get()
    entry.reason = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()


def test_groups_have_least_privilege(agent: Any, ops_user: Any) -> None:
    def perms(name: str) -> set[str]:
        return {f"{p.content_type.app_label}.{p.codename}" for p in Group.objects.get(name=name).permissions.all()}

    assert perms("dispute_agent") == set(GROUP_PERMISSIONS["dispute_agent"])
    assert perms("ops") == set(GROUP_PERMISSIONS["ops"])
    assert "gateway.resolve_dispute" not in perms("ops")
    assert not {p for p in perms("dispute_agent") if p.startswith("outbox.")}
    everything = perms("dispute_agent") | perms("ops")
    custom = {"gateway.resolve_dispute", "gateway.add_dispute_note"}
    assert not {p for p in everything - custom if p.split(".")[1].startswith(("add_", "delete_"))}
    assert everything & {"escrow.change_escrow", "escrow.change_escrowevent"} == set()
    # an agent cannot open the dead letters; ops can
    assert logged_in(agent).get("/admin/outbox/deadletter/").status_code == 403
    assert logged_in(ops_user).get("/admin/outbox/deadletter/").status_code == 200
