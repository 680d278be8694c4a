"""Every (state, command, role) of DESIGN.md's state machine, through `dispatch` on the real DB.

The expected table is written out here from DESIGN.md, independently of `rules.RULES`, so a wrong rule
in the code fails a test instead of agreeing with itself.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from django.utils import timezone

from apps.escrow.errors import EscrowNotFound, InvalidCommand, InvalidTransition, NotAllowed
from apps.escrow.models import Escrow, EscrowEvent, ProcessedCommand
from apps.escrow.public import dispatch
from apps.outbox.messages import EVENT_NAMESPACE
from apps.outbox.models import OutboxMessage
from proto.escrow import v1 as escrow_v1
from tests.escrow import given
from tests.factories import UserFactory

STATES = [
    "AWAIT_ACCEPTANCE",
    "AWAIT_FUNDS",
    "FUNDS_HELD",
    "DELIVERED",
    "RELEASING",
    "RELEASED",
    "CANCELLED",
    "REFUNDING",
    "REFUNDED",
    "DISPUTED",
]
COMMANDS = [
    "AcceptEscrow",
    "DeclineEscrow",
    "MarkDelivered",
    "ReleaseFunds",
    "CancelEscrow",
    "OpenDispute",
    "ResolveDispute",
]
ROLES = ["buyer", "seller", "staff", "timer", "system", "stranger"]

# (from state, command) -> (who may, to state, events emitted, outbound payments commands). DESIGN.md.
# The escrows here are created by the buyer, so the seller is the counterparty who accepts or declines
# (test_seller_created_deal_is_accepted_by_the_buyer covers the mirror image).
LEGAL: dict[tuple[str, str], tuple[set[str], str, list[str], list[str]]] = {
    # The payment is set up only once both parties agreed.
    ("AWAIT_ACCEPTANCE", "AcceptEscrow"): ({"seller"}, "AWAIT_FUNDS", ["EscrowAccepted"], ["CreatePaymentIntent"]),
    ("AWAIT_ACCEPTANCE", "DeclineEscrow"): ({"seller"}, "CANCELLED", ["EscrowDeclined"], []),
    ("AWAIT_ACCEPTANCE", "CancelEscrow"): ({"buyer", "staff", "timer"}, "CANCELLED", ["EscrowCancelled"], []),
    ("FUNDS_HELD", "MarkDelivered"): ({"seller"}, "DELIVERED", ["EscrowDelivered"], []),
    ("DELIVERED", "ReleaseFunds"): (
        {"buyer", "staff", "timer"},
        "RELEASING",
        ["EscrowReleaseRequested"],
        ["TransferToSeller"],
    ),
    ("AWAIT_FUNDS", "CancelEscrow"): ({"buyer", "seller", "staff", "timer"}, "CANCELLED", ["EscrowCancelled"], []),
    # Cancelling with money held records both the request for a refund and the cancellation itself.
    ("FUNDS_HELD", "CancelEscrow"): (
        {"seller", "staff"},
        "REFUNDING",
        ["EscrowRefundRequested", "EscrowCancelled"],
        ["InitiateRefund"],
    ),
    ("FUNDS_HELD", "OpenDispute"): ({"buyer", "seller"}, "DISPUTED", ["EscrowDisputed"], []),
    ("DELIVERED", "OpenDispute"): ({"buyer", "seller"}, "DISPUTED", ["EscrowDisputed"], []),
    ("DISPUTED", "ResolveDispute"): (
        {"staff"},
        "RELEASING",
        ["EscrowDisputeResolved", "EscrowReleaseRequested"],
        ["TransferToSeller"],
    ),
}
SENDERS = {cmd: set().union(*(who for (_, c), (who, *_) in LEGAL.items() if c == cmd)) for cmd in COMMANDS}


@pytest.fixture(autouse=True)
def _no_inline_bus(settings: Any) -> None:
    # The test drives every reaction itself; outbound commands stay in the outbox where it can see them.
    settings.BUS_INLINE_DISPATCH = False


@pytest.fixture
def cast(buyer: Any, seller: Any, staff: Any) -> dict[str, Any]:
    return {"buyer": buyer, "seller": seller, "staff": staff, "stranger": UserFactory(username="stranger")}


def actor_for(role: str, cast: dict[str, Any]) -> Any:
    if role == "timer":
        return given.TIMER
    if role == "system":
        return given.SYSTEM
    if role == "staff":
        return given.staff_actor(cast["staff"])
    return given.user(cast[role])


def command_for(name: str, escrow_id: uuid.UUID, actor: Any) -> Any:
    e = str(escrow_id)
    return {
        "AcceptEscrow": lambda: escrow_v1.AcceptEscrow(escrow_id=e, actor=actor),
        "DeclineEscrow": lambda: escrow_v1.DeclineEscrow(escrow_id=e, actor=actor, reason="not at that price"),
        "MarkDelivered": lambda: escrow_v1.MarkDelivered(escrow_id=e, actor=actor),
        "ReleaseFunds": lambda: escrow_v1.ReleaseFunds(escrow_id=e, actor=actor),
        "CancelEscrow": lambda: escrow_v1.CancelEscrow(escrow_id=e, actor=actor, reason="changed my mind"),
        "OpenDispute": lambda: escrow_v1.OpenDispute(escrow_id=e, actor=actor, reason="item never arrived"),
        "ResolveDispute": lambda: escrow_v1.ResolveDispute(
            escrow_id=e, actor=actor, outcome=escrow_v1.DisputeOutcome.RELEASE
        ),
    }[name]()


def expected_error(state: str, command: str, role: str) -> type[Exception]:
    if role == "stranger":
        return EscrowNotFound
    if role not in SENDERS[command]:
        return NotAllowed
    if (state, command) not in LEGAL:
        return InvalidTransition
    return NotAllowed


def check_one(state: str, command: str, role: str, cast: dict[str, Any]) -> None:
    # given an escrow in `state` whose deadlines have passed (so the timer's guard is not what decides)
    escrow_id = given.escrow_in(state, buyer=cast["buyer"], seller=cast["seller"], staff=cast["staff"])
    past = timezone.now() - datetime.timedelta(minutes=1)
    Escrow.objects.filter(pk=escrow_id).update(funding_deadline=past, acceptance_deadline=past)
    Escrow.objects.filter(pk=escrow_id, inspection_deadline__isnull=False).update(inspection_deadline=past)
    before, footprint, outbox_mark = given.snapshot(escrow_id), given.footprint(), given.last_outbox_id()
    assert before["state"] == state

    legal = LEGAL.get((state, command))
    if legal is not None and role in legal[0]:
        _, to_state, events, outbound = legal
        # when
        result = dispatch(command_for(command, escrow_id, actor_for(role, cast)), command_id=uuid.uuid4())
        # then: the right state, exactly the right events and outbound commands, the books balance
        assert (result.state, result.duplicate) == (to_state, False)
        assert given.snapshot(escrow_id)["state"] == to_state
        assert given.event_types(escrow_id)[-len(events) :] == events
        assert EscrowEvent.objects.count() == footprint[0] + len(events)
        written = given.outbox_types_since(escrow_id, outbox_mark)
        assert sorted(written) == sorted([*events, *outbound, command])
        assert ProcessedCommand.objects.count() == footprint[2] + 1
        given.assert_books_balance(escrow_id)
    else:
        with pytest.raises(expected_error(state, command, role)) as raised:
            dispatch(command_for(command, escrow_id, actor_for(role, cast)), command_id=uuid.uuid4())
        if isinstance(raised.value, (InvalidTransition, NotAllowed)):
            assert raised.value.state == state  # the 409/403 answer names the current state
        # nothing was written
        assert given.snapshot(escrow_id) == before
        assert given.footprint() == footprint


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("state", STATES)
def test_transition_table(state: str, command: str, cast: dict[str, Any]) -> None:
    """One database per (state, command); a fresh escrow per role. Every role is checked, and the
    failure lists each role whose outcome differs from the table."""
    failures = []
    for role in ROLES:
        try:
            check_one(state, command, role, cast)
        except (Exception, pytest.fail.Exception) as exc:  # noqa: BLE001 - reported per role below
            failures.append(f"{state} {command} by {role}: {exc!r}")
    assert not failures, "\n".join(failures)


def test_gateway_status_codes_for_domain_errors() -> None:
    """409 for a state conflict, 403 for the wrong actor, 404 for a stranger: mapped once at the edge."""
    from apps.gateway.problems import from_domain  # noqa: PLC0415

    assert from_domain(InvalidTransition("x", state="RELEASED")).status_code == 409
    assert from_domain(NotAllowed("x", state="FUNDS_HELD")).status_code == 403
    assert from_domain(EscrowNotFound("x")).status_code == 404


def test_same_command_id_twice_has_one_effect(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    command = escrow_v1.MarkDelivered(escrow_id=str(escrow_id), actor=given.user(seller))
    command_id = uuid.uuid4()

    first = dispatch(command, command_id=command_id)
    footprint = given.footprint()
    second = dispatch(command, command_id=command_id)

    assert (first.duplicate, second.duplicate) == (False, True)
    assert second.state == "DELIVERED" and second.version == first.version
    assert given.footprint() == footprint
    assert given.event_types(escrow_id).count("EscrowDelivered") == 1


def _proposal(escrow_id: uuid.UUID, *, buyer: Any, seller: Any) -> escrow_v1.CreateEscrow:
    return escrow_v1.CreateEscrow(
        escrow_id=str(escrow_id),
        buyer_id=buyer.pk,
        seller_id=seller.pk,
        amount=given.money(500),
        description="x",
        actor=given.user(buyer),
    )


def test_create_twice_with_one_command_id_creates_one_escrow(buyer: Any, seller: Any) -> None:
    command_id = uuid.uuid4()
    command = _proposal(uuid.uuid4(), buyer=buyer, seller=seller)
    dispatch(command, command_id=command_id)
    footprint = given.footprint()

    again = dispatch(command, command_id=command_id)

    assert again.duplicate is True
    assert given.footprint() == footprint
    assert Escrow.objects.count() == 1
    # the same escrow id under another command id is refused, not a second escrow
    with pytest.raises(InvalidCommand):
        dispatch(command, command_id=uuid.uuid4())
    assert given.footprint() == footprint


def test_a_command_id_spent_on_one_create_is_refused_for_another_escrow(buyer: Any, seller: Any) -> None:
    command_id = uuid.uuid4()

    def create(escrow_id: uuid.UUID) -> Any:
        return dispatch(_proposal(escrow_id, buyer=buyer, seller=seller), command_id=command_id)

    first = create(uuid.uuid4())
    footprint = given.footprint()
    # A clear refusal, not the processed command's primary key failing under the new escrow.
    with pytest.raises(InvalidCommand, match="already used for another command"):
        create(uuid.uuid4())
    assert given.footprint() == footprint
    assert list(Escrow.objects.values_list("id", "version")) == [(first.escrow_id, 1)]
    assert ProcessedCommand.objects.get(command_id=command_id).escrow_id == first.escrow_id


def test_create_awaits_acceptance_and_asks_for_no_payment_yet(buyer: Any, seller: Any) -> None:
    mark = given.last_outbox_id()
    escrow_id = given.propose(buyer=buyer, seller=seller)
    escrow = Escrow.objects.get(pk=escrow_id)
    assert (escrow.state, escrow.creator_role, escrow.created_by_id) == ("AWAIT_ACCEPTANCE", "buyer", buyer.pk)
    assert escrow.funding_deadline is None and escrow.acceptance_deadline is not None
    assert given.event_types(escrow_id) == ["EscrowCreated"]
    assert sorted(given.outbox_types_since(escrow_id, mark)) == ["CreateEscrow", "EscrowCreated"]


def test_accept_starts_the_funding_deadline_and_asks_for_the_payment(buyer: Any, seller: Any, settings: Any) -> None:
    settings.FUNDING_DEADLINE_HOURS = 5
    escrow_id = given.propose(buyer=buyer, seller=seller)
    mark = given.last_outbox_id()
    before = timezone.now()
    given.send(escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=given.user(seller)))
    escrow = Escrow.objects.get(pk=escrow_id)
    assert escrow.state == "AWAIT_FUNDS"
    assert before + datetime.timedelta(hours=5) <= escrow.funding_deadline
    assert escrow.funding_deadline <= timezone.now() + datetime.timedelta(hours=5)
    assert given.event_types(escrow_id) == ["EscrowCreated", "EscrowAccepted"]
    assert sorted(given.outbox_types_since(escrow_id, mark)) == [
        "AcceptEscrow",
        "CreatePaymentIntent",
        "EscrowAccepted",
    ]


def test_seller_created_deal_is_accepted_by_the_buyer(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.propose(buyer=buyer, seller=seller, creator=seller)
    assert Escrow.objects.get(pk=escrow_id).created_by_id == seller.pk
    before, footprint = given.snapshot(escrow_id), given.footprint()
    # the seller created it: the seller can neither accept nor decline it, the buyer cannot cancel it
    for refused in (
        escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=given.user(seller)),
        escrow_v1.DeclineEscrow(escrow_id=str(escrow_id), actor=given.user(seller)),
        escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=given.user(buyer)),
        escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=given.staff_actor(staff)),
    ):
        with pytest.raises(NotAllowed):
            given.send(refused)
    assert (given.snapshot(escrow_id), given.footprint()) == (before, footprint)
    result = given.send(escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=given.user(buyer)))
    assert result.state == "AWAIT_FUNDS"
    # and the seller who created it may cancel another one before it is accepted
    other = given.propose(buyer=buyer, seller=seller, creator=seller)
    assert given.send(escrow_v1.CancelEscrow(escrow_id=str(other), actor=given.user(seller))).state == "CANCELLED"


@pytest.mark.parametrize(
    "change",
    [
        {"amount": given.money(0)},
        {"amount": given.money(-5)},
        {"seller": "buyer"},
        {"actor": "stranger"},
        {"actor": "timer"},
        {"escrow_id": "not-a-uuid"},
    ],
    ids=["zero", "negative", "self-dealing", "not-a-party", "not-a-user", "bad-id"],
)
def test_create_rejects_bad_input_and_writes_nothing(change: dict[str, Any], buyer: Any, seller: Any) -> None:
    fields: dict[str, Any] = {
        "escrow_id": str(uuid.uuid4()),
        "buyer_id": buyer.pk,
        "seller_id": seller.pk,
        "amount": given.money(500),
        "description": "x",
        "actor": given.user(buyer),
    }
    if change.get("seller") == "buyer":
        fields["seller_id"] = buyer.pk
    elif change.get("actor") == "stranger":
        fields["actor"] = given.user(UserFactory(username="outsider"))
    elif change.get("actor") == "timer":
        fields["actor"] = given.TIMER
    else:
        fields.update(change)
    with pytest.raises((InvalidCommand, EscrowNotFound)):
        dispatch(escrow_v1.CreateEscrow(**fields), command_id=uuid.uuid4())
    assert (Escrow.objects.count(), *given.footprint()) == (0, 0, 0, 0)


def test_event_ids_are_uuid5_of_escrow_version_and_type(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("RELEASED", buyer=buyer, seller=seller, staff=staff)
    events = list(EscrowEvent.objects.filter(escrow_id=escrow_id).order_by("version"))
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert event.event_id == uuid.uuid5(EVENT_NAMESPACE, f"{escrow_id}:{event.version}:{event.type}")
        # the outbox carries the same id, so a consumer dedupes the audit row and the message alike
        assert OutboxMessage.objects.filter(event_id=event.event_id, aggregate_version=event.version).exists()
    assert Escrow.objects.get(pk=escrow_id).version == events[-1].version


@pytest.mark.parametrize(
    ("outcome", "seller_amount", "to_state", "outbound"),
    [
        (escrow_v1.DisputeOutcome.REFUND, None, "REFUNDING", ["InitiateRefund"]),
        (escrow_v1.DisputeOutcome.SPLIT, 9_999, "RELEASING", ["TransferToSeller", "InitiateRefund"]),
    ],
    ids=["refund", "split"],
)
def test_resolve_refund_and_split(
    outcome: Any, seller_amount: int | None, to_state: str, outbound: list[str], buyer: Any, seller: Any, staff: Any
) -> None:
    escrow_id = given.escrow_in("DISPUTED", buyer=buyer, seller=seller, staff=staff)
    mark = given.last_outbox_id()
    given.send(
        escrow_v1.ResolveDispute(
            escrow_id=str(escrow_id),
            actor=given.staff_actor(staff),
            outcome=outcome,
            seller_amount=given.money(seller_amount) if seller_amount else None,
        )
    )
    after = given.snapshot(escrow_id)
    assert after["state"] == to_state
    written = given.outbox_types_since(escrow_id, mark)
    assert [t for t in written if t in ("TransferToSeller", "InitiateRefund")] == outbound
    assert after["pending_payout_minor"] + after["pending_refund_minor"] == given.AMOUNT
    given.assert_books_balance(escrow_id)


@pytest.mark.parametrize(
    "seller_amount",
    [None, given.money(0), given.money(given.AMOUNT), given.money(given.AMOUNT + 1), given.money(5, "EUR")],
    ids=["missing", "zero", "all", "more-than-all", "other-currency"],
)
def test_split_with_a_bad_share_is_refused(seller_amount: Any, buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("DISPUTED", buyer=buyer, seller=seller, staff=staff)
    before, footprint = given.snapshot(escrow_id), given.footprint()
    with pytest.raises(InvalidCommand) as raised:
        given.send(
            escrow_v1.ResolveDispute(
                escrow_id=str(escrow_id),
                actor=given.staff_actor(staff),
                outcome=escrow_v1.DisputeOutcome.SPLIT,
                seller_amount=seller_amount,
            )
        )
    assert raised.value.field == "seller_amount"
    assert (given.snapshot(escrow_id), given.footprint()) == (before, footprint)


def test_dispute_without_reason_is_refused(buyer: Any, seller: Any, staff: Any) -> None:
    escrow_id = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    before, footprint = given.snapshot(escrow_id), given.footprint()
    with pytest.raises(InvalidCommand):
        given.send(escrow_v1.OpenDispute(escrow_id=str(escrow_id), actor=given.user(buyer), reason="   "))
    assert (given.snapshot(escrow_id), given.footprint()) == (before, footprint)


def test_unknown_escrow_and_actorless_commands_write_nothing(buyer: Any) -> None:
    with pytest.raises(EscrowNotFound):
        given.send(escrow_v1.MarkDelivered(escrow_id=str(uuid.uuid4()), actor=given.user(buyer)))
    assert given.footprint() == (0, 0, 0)


def test_a_command_id_spent_on_another_escrow_or_command_is_refused(buyer: Any, seller: Any, staff: Any) -> None:
    first = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    other = given.escrow_in("FUNDS_HELD", buyer=buyer, seller=seller, staff=staff)
    command_id = uuid.uuid4()
    dispatch(escrow_v1.MarkDelivered(escrow_id=str(first), actor=given.user(seller)), command_id=command_id)
    before, footprint = given.snapshot(other), given.footprint()

    # the same id for the same command on another escrow would otherwise answer "duplicate" and do nothing
    with pytest.raises(InvalidCommand) as raised:
        dispatch(escrow_v1.MarkDelivered(escrow_id=str(other), actor=given.user(seller)), command_id=command_id)
    assert raised.value.field == "command_id"
    # and for another command on the same escrow
    with pytest.raises(InvalidCommand):
        dispatch(
            escrow_v1.OpenDispute(escrow_id=str(first), actor=given.user(buyer), reason="late"), command_id=command_id
        )
    assert (given.snapshot(other), given.footprint()) == (before, footprint)
