"""The bank test: random histories of commands, payments, duplicated and replayed webhooks, timers and
staff resolutions over several escrows, with the money invariant and the audit invariants checked after
every step.

Everything goes through the real entry points (`apps.escrow.dispatch`, the signed webhook path
`apps.payments.webhooks.webhook_receive`, `apps.payments.public.sandbox_pay`, `fire_due_timers`) with
real commits, so the bus runs every subscriber inline after each commit, exactly as in production.

The model below knows only DESIGN.md's state table; it predicts whether each command is accepted and
where it leads, independently of `apps.escrow.rules.RULES`.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from apps.escrow.errors import EscrowError, EscrowNotFound
from apps.escrow.models import TERMINAL_STATES, Escrow, EscrowEvent, EscrowState
from apps.escrow.public import dispatch
from apps.escrow.timers import fire_due_timers
from apps.outbox.drain import drain
from apps.outbox.messages import ESCROW_EVENTS, PAYMENTS_COMMANDS, decode
from apps.outbox.models import DeadLetter, OutboxMessage
from apps.outbox.public import lag, outbox_subscribers
from apps.payments import public as payments
from apps.payments.models import PaymentArtifact
from apps.payments.providers import sandbox, stripe_signature
from apps.projections.models import EscrowView
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1
from tests.factories import StaffFactory, UserFactory
from tests.properties.figures import record_figures

S = EscrowState
MAX_ESCROWS = 4
# How long the checks wait for the bus to deliver what is committed. Inline delivery normally leaves
# nothing behind; on a PostgreSQL cluster shared with other work, an old transaction anywhere holds the
# watermark back and delivery resumes once it ends.
CATCH_UP_SECONDS = 120
FIGURES: dict[str, int] = {
    "bus_catch_ups": 0,
    "histories": 0,
    "steps": 0,
    "commands_accepted": 0,
    "commands_refused": 0,
    "webhooks_sent": 0,
    "webhook_duplicates_replayed": 0,
    "timers_fired": 0,
    "escrows": 0,
    "escrows_settled": 0,
}

# DESIGN.md, "Escrow state machine": every edge a state may take. AWAIT_FUNDS -> REFUNDING is the one
# addition: cancelling an escrow that received a mismatched payment must give that money back.
EDGES: dict[str, set[str]] = {
    S.AWAIT_ACCEPTANCE: {S.AWAIT_FUNDS, S.CANCELLED},
    S.AWAIT_FUNDS: {S.FUNDS_HELD, S.CANCELLED, S.REFUNDING},
    S.FUNDS_HELD: {S.DELIVERED, S.REFUNDING, S.DISPUTED},
    S.DELIVERED: {S.RELEASING, S.DISPUTED},
    S.DISPUTED: {S.RELEASING, S.REFUNDING},
    S.RELEASING: {S.RELEASED},
    S.REFUNDING: {S.REFUNDED},
    S.RELEASED: set(),
    S.REFUNDED: set(),
    S.CANCELLED: set(),
}


def reachable(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in EDGES[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# Who may send what, in which state (DESIGN.md's table; "admin" is staff). The timer also needs its
# deadline to have passed. "creator" and "counterparty" are whichever of buyer and seller created the deal
# and the other one.
LEGAL: dict[tuple[str, str], set[str]] = {
    ("AcceptEscrow", S.AWAIT_ACCEPTANCE): {"counterparty"},
    ("DeclineEscrow", S.AWAIT_ACCEPTANCE): {"counterparty"},
    ("CancelEscrow", S.AWAIT_ACCEPTANCE): {"creator", "staff", "timer"},
    ("MarkDelivered", S.FUNDS_HELD): {"seller"},
    ("ReleaseFunds", S.DELIVERED): {"buyer", "staff", "timer"},
    ("CancelEscrow", S.AWAIT_FUNDS): {"buyer", "seller", "staff", "timer"},
    ("CancelEscrow", S.FUNDS_HELD): {"seller", "staff"},
    ("OpenDispute", S.FUNDS_HELD): {"buyer", "seller"},
    ("OpenDispute", S.DELIVERED): {"buyer", "seller"},
    ("ResolveDispute", S.DISPUTED): {"staff"},
}

MONEY_FIELDS = (
    "received_minor",
    "held_minor",
    "paid_out_minor",
    "refunded_minor",
    "fee_minor",
    "pending_payout_minor",
    "pending_refund_minor",
)
SNAPSHOT_FIELDS = ("state", "version", *MONEY_FIELDS)


@dataclass
class People:
    buyer: Any
    seller: Any
    stranger: Any
    staff: Any


def signed_webhook(
    event_type: str, obj: dict[str, Any], *, event_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A webhook as the sandbox provider signs it (Stripe's scheme), with a chosen or fresh event id."""
    event = {
        "id": event_id or f"evt_prop_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }
    body = json.dumps(event, separators=(",", ":"))
    return body.encode(), {"Stripe-Signature": stripe_signature.sign(body=body, secret=sandbox.webhook_secret())}


def settle() -> None:
    """Lets the bus deliver everything committed so far (what a worker does), so that every service's
    records can be compared. The money invariant itself holds at every moment regardless."""
    started = time.monotonic()
    while True:
        drain()
        if all(lag(sub) == 0 for sub in outbox_subscribers()):
            return
        FIGURES["bus_catch_ups"] += 1
        assert time.monotonic() - started < CATCH_UP_SECONDS, "the bus did not deliver committed messages"
        time.sleep(0.05)


class MoneyMachine(RuleBasedStateMachine):
    people: People

    escrows = Bundle("escrows")

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[uuid.UUID] = []
        self.sent_webhooks: list[tuple[bytes, dict[str, str]]] = []
        self.accepted: list[tuple[Any, uuid.UUID]] = []
        self.creator: dict[uuid.UUID, str] = {}
        self.before: dict[uuid.UUID, dict[str, Any]] = {}
        self.ever_terminal: dict[uuid.UUID, str] = {}
        FIGURES["histories"] += 1

    # --- helpers ------------------------------------------------------------------------------------

    def actor(self, role: str) -> Actor:
        if role == "timer":
            return Actor(kind=ActorKind.TIMER)
        if role == "staff":
            return Actor(kind=ActorKind.STAFF, user_id=self.people.staff.pk)
        return Actor(kind=ActorKind.USER, user_id=getattr(self.people, role).pk)

    def snapshot(self) -> dict[uuid.UUID, dict[str, Any]]:
        return {row["id"]: row for row in Escrow.objects.filter(id__in=self.ids).values("id", *SNAPSHOT_FIELDS)}

    def deliver(self, body: bytes, headers: dict[str, str]) -> payments.WebhookOutcome:
        outcome = payments.webhook_receive(provider="sandbox", body=body, headers=headers)
        assert outcome.http_status < 500, outcome
        self.sent_webhooks.append((body, headers))
        FIGURES["webhooks_sent"] += 1
        return outcome

    def payment_artifact(self, escrow_id: uuid.UUID) -> PaymentArtifact | None:
        # None until the deal is accepted: no payment exists to pay or to fake events about.
        return PaymentArtifact.objects.filter(escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT).first()

    def sides(self, escrow_id: uuid.UUID, role: str) -> set[str]:
        if role not in ("buyer", "seller"):
            return {role}
        return {role, "creator" if self.creator[escrow_id] == role else "counterparty"}

    def party_for(self, escrow_id: uuid.UUID, side: str) -> str:
        if side == "creator":
            return self.creator[escrow_id]
        if side == "counterparty":
            return "seller" if self.creator[escrow_id] == "buyer" else "buyer"
        return side

    # --- rules --------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.ids) < MAX_ESCROWS)
    @rule(
        target=escrows,
        amount=st.integers(min_value=100, max_value=2_000_000),
        creator=st.sampled_from(["buyer", "seller"]),
    )
    def create(self, amount: int, creator: str) -> uuid.UUID:
        escrow_id = uuid.uuid4()
        command = escrow_v1.CreateEscrow(
            escrow_id=str(escrow_id),
            buyer_id=self.people.buyer.pk,
            seller_id=self.people.seller.pk,
            amount=Money(amount_minor=amount, currency="USD"),
            description="property",
            actor=self.actor(creator),
        )
        result = dispatch(command, command_id=uuid.uuid4())
        assert result.state == S.AWAIT_ACCEPTANCE
        self.creator[escrow_id] = creator
        self.ids.append(escrow_id)
        FIGURES["escrows"] += 1
        return escrow_id

    @rule(escrow_id=escrows)
    def pay_in_full(self, escrow_id: uuid.UUID) -> None:
        if self.payment_artifact(escrow_id) is None:
            with pytest.raises(payments.SandboxUnavailable):
                payments.sandbox_pay(str(escrow_id))  # nothing to pay before the deal is accepted
            return
        outcome = payments.sandbox_pay(str(escrow_id))
        assert outcome.http_status < 500, outcome
        FIGURES["webhooks_sent"] += 1

    @rule(escrow_id=escrows, delta=st.integers(min_value=-99, max_value=5_000).filter(bool))
    def pay_wrong_amount(self, escrow_id: uuid.UUID, delta: int) -> None:
        artifact = self.payment_artifact(escrow_id)
        if artifact is None:
            return
        obj = {**artifact.raw, "status": "succeeded", "amount_received": artifact.amount_minor + delta}
        self.deliver(*signed_webhook("payment_intent.succeeded", obj))

    @rule(escrow_id=escrows)
    def payment_fails(self, escrow_id: uuid.UUID) -> None:
        artifact = self.payment_artifact(escrow_id)
        if artifact is None:
            return
        obj = {**artifact.raw, "status": "requires_payment_method", "last_payment_error": {"code": "card_declined"}}
        self.deliver(*signed_webhook("payment_intent.payment_failed", obj))

    @rule(escrow_id=escrows)
    def chargeback(self, escrow_id: uuid.UUID) -> None:
        artifact = self.payment_artifact(escrow_id)
        if artifact is None:
            return
        obj = {
            "id": f"dp_{uuid.uuid4().hex[:12]}",
            "object": "dispute",
            "payment_intent": artifact.provider_id,
            "amount": artifact.amount_minor,
            "reason": "fraudulent",
        }
        self.deliver(*signed_webhook("charge.dispute.created", obj))

    @precondition(lambda self: self.sent_webhooks)
    @rule(data=st.data())
    def replay_webhook(self, data: st.DataObject) -> None:
        """The provider sends the very same request again (same event id, same signature)."""
        body, headers = data.draw(st.sampled_from(self.sent_webhooks))
        outcome = payments.webhook_receive(provider="sandbox", body=body, headers=headers)
        assert outcome.http_status < 500
        FIGURES["webhook_duplicates_replayed"] += 1

    @rule(
        escrow_id=escrows,
        kind=st.sampled_from(["payment", "transfer", "refund", "refund_failed", "transfer_reversed"]),
        same_event_id=st.booleans(),
    )
    def provider_event_again(self, escrow_id: uuid.UUID, kind: str, same_event_id: bool) -> None:
        """A late, repeated or reordered provider event about an object we already have."""
        artifact_kind = {"payment": "payment", "transfer": "transfer", "transfer_reversed": "transfer"}.get(
            kind, "refund"
        )
        artifact = PaymentArtifact.objects.filter(escrow_id=escrow_id, kind=artifact_kind).first()
        if artifact is None:
            return
        if kind == "payment":
            event_type, obj = (
                "payment_intent.succeeded",
                {**artifact.raw, "status": "succeeded", "amount_received": artifact.amount_minor},
            )
        elif kind == "transfer":
            event_type, obj = "transfer.created", artifact.raw
        elif kind == "transfer_reversed":
            event_type, obj = "transfer.reversed", {**artifact.raw, "reversed": True}
        else:
            status = "succeeded" if kind == "refund" else "failed"
            event_type, obj = "refund.updated", {**artifact.raw, "status": status}
        if same_event_id:
            # Exactly what the sandbox sent the first time (same event id), freshly signed.
            self.deliver(*sandbox.signed_event(event_type, obj))
        else:
            self.deliver(*signed_webhook(event_type, obj))

    @rule(
        escrow_id=escrows,
        role=st.sampled_from(["buyer", "seller", "staff", "stranger", "timer"]),
        name=st.sampled_from(
            [
                "AcceptEscrow",
                "DeclineEscrow",
                "MarkDelivered",
                "ReleaseFunds",
                "CancelEscrow",
                "OpenDispute",
                "ResolveDispute",
            ]
        ),
        outcome=st.sampled_from(["release", "refund", "split"]),
        split=st.integers(min_value=-5, max_value=2_100_000),
    )
    def command(self, escrow_id: uuid.UUID, role: str, name: str, outcome: str, split: int) -> None:
        self._send_command(escrow_id, role, name, outcome, split)

    @rule(escrow_id=escrows, data=st.data(), outcome=st.sampled_from(["release", "refund", "split"]))
    def sensible_command(self, escrow_id: uuid.UUID, data: st.DataObject, outcome: str) -> None:
        """A command someone entitled would send in the current state (random ones are mostly refused)."""
        escrow = Escrow.objects.get(pk=escrow_id)
        options = sorted(
            (name, self.party_for(escrow_id, role))
            for (name, state), roles in LEGAL.items()
            if state == escrow.state
            for role in roles
            if role != "timer"
        )
        if not options:
            return
        name, role = data.draw(st.sampled_from(options))
        split = data.draw(st.integers(min_value=1, max_value=max(1, escrow.amount_minor - 1)))
        self._send_command(escrow_id, role, name, outcome, split)

    @rule(
        escrow_id=escrows,
        data=st.data(),
        outcome=st.sampled_from(["release", "refund", "split"]),
        role=st.sampled_from(["buyer", "seller", "staff", "stranger", "timer"]),
    )
    def near_miss_command(self, escrow_id: uuid.UUID, data: st.DataObject, outcome: str, role: str) -> None:
        """A command that is valid in the current state, from anyone: probes who may send it."""
        escrow = Escrow.objects.get(pk=escrow_id)
        names = sorted({name for (name, state) in LEGAL if state == escrow.state})
        if not names:
            return
        name = data.draw(st.sampled_from(names))
        split = data.draw(st.integers(min_value=1, max_value=max(1, escrow.amount_minor - 1)))
        self._send_command(escrow_id, role, name, outcome, split)

    def _send_command(self, escrow_id: uuid.UUID, role: str, name: str, outcome: str, split: int) -> None:
        before = Escrow.objects.get(pk=escrow_id)
        actor = self.actor(role)
        common = {"escrow_id": str(escrow_id), "actor": actor}
        if name == "AcceptEscrow":
            command: Any = escrow_v1.AcceptEscrow(**common)
        elif name == "DeclineEscrow":
            command = escrow_v1.DeclineEscrow(**common, reason="not at that price")
        elif name == "MarkDelivered":
            command = escrow_v1.MarkDelivered(**common)
        elif name == "ReleaseFunds":
            command = escrow_v1.ReleaseFunds(**common)
        elif name == "CancelEscrow":
            command = escrow_v1.CancelEscrow(**common, reason="changed my mind")
        elif name == "OpenDispute":
            command = escrow_v1.OpenDispute(**common, reason="item not as described")
        else:
            command = escrow_v1.ResolveDispute(
                **common,
                outcome=getattr(escrow_v1.DisputeOutcome, outcome.upper()),
                seller_amount=Money(amount_minor=split, currency="USD") if outcome == "split" else None,
            )

        legal = bool(self.sides(escrow_id, role) & LEGAL.get((name, before.state), set()))
        now = timezone.now()
        if role == "timer" and name == "CancelEscrow":
            deadline = before.acceptance_deadline if before.state == S.AWAIT_ACCEPTANCE else before.funding_deadline
            legal = legal and deadline is not None and deadline <= now
        if role == "timer" and name == "ReleaseFunds":
            legal = legal and before.inspection_deadline is not None and before.inspection_deadline <= now
        if name == "ResolveDispute" and outcome == "split":
            legal = legal and 0 < split < before.amount_minor

        outbox_before = OutboxMessage.objects.count()
        command_id = uuid.uuid4()
        try:
            result = dispatch(command, command_id=command_id)
        except EscrowError as exc:
            FIGURES["commands_refused"] += 1
            assert not legal, f"{role} {name} in {before.state} was refused: {exc.detail}"
            if role == "stranger":
                assert isinstance(exc, EscrowNotFound), "a stranger must not learn the escrow exists"
            # A refused command changes nothing at all.
            after = Escrow.objects.get(pk=escrow_id)
            assert [getattr(after, f) for f in SNAPSHOT_FIELDS] == [getattr(before, f) for f in SNAPSHOT_FIELDS]
            assert OutboxMessage.objects.count() == outbox_before
            return
        FIGURES["commands_accepted"] += 1
        assert legal, f"{role} {name} in {before.state} was accepted"
        assert not result.duplicate
        self.accepted.append((command, command_id))

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def command_again(self, data: st.DataObject) -> None:
        """The same command id a second time: one effect."""
        command, command_id = data.draw(st.sampled_from(self.accepted))
        before = self.snapshot()
        outbox_before = OutboxMessage.objects.count()
        result = dispatch(command, command_id=command_id)
        assert result.duplicate
        assert self.snapshot() == before
        assert OutboxMessage.objects.count() == outbox_before

    @rule(escrow_id=escrows, which=st.sampled_from(["acceptance", "funding", "inspection"]))
    def deadline_passes(self, escrow_id: uuid.UUID, which: str) -> None:
        """Test setup moves a deadline into the past (no clock to fake); the real timer runner acts."""
        past = timezone.now() - datetime.timedelta(seconds=1)
        escrows = Escrow.objects.filter(pk=escrow_id)
        if which == "acceptance":
            escrows.update(acceptance_deadline=past)
        elif which == "funding":
            escrows.filter(funding_deadline__isnull=False).update(funding_deadline=past)
        else:
            escrows.filter(inspection_deadline__isnull=False).update(inspection_deadline=past)
        FIGURES["timers_fired"] += fire_due_timers()

    # --- invariants ---------------------------------------------------------------------------------

    @invariant()
    def money_and_audit_agree(self) -> None:
        FIGURES["steps"] += 1
        settle()
        now = self.snapshot()
        for escrow_id, row in now.items():
            escrow = Escrow.objects.get(pk=escrow_id)
            self._money(escrow)
            self._artifacts(escrow)
            self._audit(escrow)
            self._transition(escrow_id, self.before.get(escrow_id), row)
        assert not DeadLetter.objects.exists(), list(DeadLetter.objects.values("type", "error"))
        self.before = now

    def _money(self, e: Escrow) -> None:
        for name in MONEY_FIELDS:
            assert getattr(e, name) >= 0, (name, getattr(e, name))
        assert e.received_minor == e.held_minor + e.paid_out_minor + e.refunded_minor + e.fee_minor
        # Nothing goes out beyond what came in, nor is asked for beyond what is held.
        assert e.paid_out_minor + e.fee_minor <= e.amount_minor
        assert e.pending_payout_minor + e.pending_refund_minor <= e.held_minor
        # With the sandbox every requested movement completes inline: nothing stays in flight.
        assert e.pending_payout_minor == 0 and e.pending_refund_minor == 0, e.state
        if e.state in TERMINAL_STATES and e.held_minor:
            assert e.attention, f"{e.state} escrow holds {e.held_minor} and nobody was told"

    def _artifacts(self, e: Escrow) -> None:
        """The escrow's books agree with the payments service's records of provider objects."""
        artifacts = PaymentArtifact.objects.filter(escrow_id=e.id)
        if not EscrowEvent.objects.filter(escrow=e, type="escrow.v1.EscrowAccepted").exists():
            # Nobody is asked to pay for a deal both parties have not agreed to.
            assert not artifacts.exists(), "a payment was set up for a deal nobody accepted"
            assert not OutboxMessage.objects.filter(aggregate_id=str(e.id), topic=PAYMENTS_COMMANDS).exists()
            assert e.received_minor == 0
        transfers = artifacts.filter(kind=PaymentArtifact.Kind.TRANSFER)
        refunds = artifacts.filter(kind=PaymentArtifact.Kind.REFUND)
        commands = OutboxMessage.objects.filter(aggregate_id=str(e.id), topic=PAYMENTS_COMMANDS)
        # At most one payout and one refund per escrow, each from exactly one command.
        assert transfers.count() <= 1 and refunds.count() <= 1
        assert transfers.count() == commands.filter(type="payments.v1.TransferToSeller").count()
        assert refunds.count() == commands.filter(type="payments.v1.InitiateRefund").count()
        done = transfers.exclude(status=PaymentArtifact.Status.PENDING)
        sums = done.aggregate(net=Sum("amount_minor"), fee=Sum("fee_minor"))
        if e.paid_out_minor or e.fee_minor:
            assert (sums["net"], sums["fee"]) == (e.paid_out_minor, e.fee_minor)
        refunded = refunds.exclude(status=PaymentArtifact.Status.PENDING).aggregate(s=Sum("amount_minor"))["s"]
        assert (refunded or 0) == e.refunded_minor
        # Money received = what the payments service reported as succeeded payments in this currency.
        received = 0
        for row in OutboxMessage.objects.filter(aggregate_id=str(e.id), type="payments.v1.PaymentSucceeded"):
            paid = decode(row.type, row.payload).amount
            if paid.currency == e.currency:
                received += paid.amount_minor
        assert received == e.received_minor

    def _audit(self, e: Escrow) -> None:
        events = list(
            EscrowEvent.objects.filter(escrow=e).order_by("version").values_list("version", "event_id", "type")
        )
        assert [v for v, _, _ in events] == list(range(1, e.version + 1)), "audit versions must be contiguous"
        outbox = {
            row.event_id: row for row in OutboxMessage.objects.filter(aggregate_id=str(e.id), topic=ESCROW_EVENTS)
        }
        assert len(outbox) == len(events)
        for version, event_id, type_ in events:
            row = outbox[event_id]
            assert (row.aggregate_version, row.type) == (version, type_)
        view = EscrowView.objects.get(escrow_id=e.id)
        assert (view.state, view.version) == (e.state, e.version), "the read model lags or disagrees"

    def _transition(self, escrow_id: uuid.UUID, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        if before is None:
            return
        assert after["version"] >= before["version"]
        assert after["state"] in reachable(before["state"]), f"{before['state']} -> {after['state']}"
        if after["state"] in TERMINAL_STATES:
            self.ever_terminal.setdefault(escrow_id, after["state"])
        if escrow_id in self.ever_terminal:
            assert after["state"] == self.ever_terminal[escrow_id], "a final state changed"

    def teardown(self) -> None:
        FIGURES["escrows_settled"] += len(self.ever_terminal)


@pytest.mark.timeout(900)
def test_random_histories_never_lose_money(transactional_db: None) -> None:
    MoneyMachine.people = People(
        buyer=UserFactory(username="prop-buyer"),
        seller=UserFactory(username="prop-seller"),
        stranger=UserFactory(username="prop-stranger"),
        staff=StaffFactory(username="prop-staff"),
    )
    for key in FIGURES:
        FIGURES[key] = 0
    run_state_machine_as_test(
        MoneyMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    record_figures("money_invariant", FIGURES)
    assert FIGURES["histories"] >= 50 and FIGURES["commands_accepted"] > 0 and FIGURES["escrows_settled"] > 0
