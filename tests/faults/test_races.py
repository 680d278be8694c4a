"""Many conflicting commands on one escrow at the same moment (PostgreSQL: real parallel writers).

Every racer is allowed to send its command in the starting state, so exactly one wins and every other
one must see the state the winner left: 409 `invalid_transition` through the API, a no-op for the timer.
Whatever wins, at most one payment command goes out and the escrow's records agree.
(tests/gateway/test_concurrency.py races two requests; tests/escrow/test_concurrency.py races the
service directly; this one races 8 to 10 callers, the timer among them, over repeated rounds.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from django.utils import timezone

from apps.escrow.models import Escrow, EscrowEvent, ProcessedCommand
from apps.escrow.timers import fire_due_timers
from tests.faults.support import (
    assert_nothing_twice,
    assert_records_agree,
    at_once,
    funded_escrow,
    new_key,
    payment_commands,
)
from tests.gateway.support import assert_problem, settle
from tests.helpers import act, create_escrow
from tests.properties.figures import record_figures

pytestmark = pytest.mark.postgres_only

ROUNDS = 5
FIGURES: Counter[str] = Counter()


def _outcome(result: Any) -> str:
    """'won' or 'lost' for one racer; anything else fails the test with what it was."""
    if isinstance(result, int):  # the timer: how many commands it applied
        assert result in (0, 1), result
        return "won" if result else "lost"
    assert not isinstance(result, Exception), repr(result)
    if result.status_code == 202:
        return "won"
    assert_problem(result, 409, "invalid_transition")
    return "lost"


def _race(escrow_id: str, racers: dict[str, Callable[[], Any]]) -> str:
    """Runs the racers at once; returns the winner's name after checking the others lost cleanly."""
    commands_before = ProcessedCommand.objects.filter(escrow_id=escrow_id).count()
    names = list(racers)
    results = at_once(*racers.values())
    outcomes = [_outcome(r) for r in results]
    winners = [name for name, outcome in zip(names, outcomes, strict=True) if outcome == "won"]
    assert len(winners) == 1, list(zip(names, outcomes, strict=True))
    FIGURES["races"] += 1
    FIGURES["racers"] += len(names)
    FIGURES[f"won by {winners[0].split('#')[0]}"] += 1
    record_figures("races", dict(FIGURES))
    settle()
    # one command applied, whatever the number of callers
    assert ProcessedCommand.objects.filter(escrow_id=escrow_id).count() == commands_before + 1
    assert_records_agree(escrow_id)
    assert_nothing_twice()
    return winners[0]


def test_release_dispute_and_timer_racing_on_a_delivered_escrow(api_client, buyer, seller, staff):
    for round_ in range(ROUNDS):
        escrow_id = funded_escrow(api_client(buyer), seller)
        assert act(api_client(seller), escrow_id, "deliver").status_code == 202
        settle()
        # the inspection period has lapsed, so the timer is a legitimate racer too
        Escrow.objects.filter(pk=escrow_id).update(inspection_deadline=timezone.now() - timezone.timedelta(seconds=1))
        racers: dict[str, Callable[[], Any]] = {}
        for n in range(2):
            racers[f"buyer release#{n}"] = partial(
                act, api_client(buyer), escrow_id, "release", HTTP_IDEMPOTENCY_KEY=new_key()
            )
            racers[f"staff release#{n}"] = partial(act, api_client(staff), escrow_id, "release")
            racers[f"buyer dispute#{n}"] = partial(act, api_client(buyer), escrow_id, "dispute", {"reason": "fake"})
            racers[f"seller dispute#{n}"] = partial(act, api_client(seller), escrow_id, "dispute", {"reason": "late"})
            if round_ % 2:  # the timer skips the HTTP stack and nearly always wins: every other round only
                racers[f"timer#{n}"] = fire_due_timers

        winner = _race(escrow_id, racers)

        escrow = Escrow.objects.get(pk=escrow_id)
        if "release" in winner or "timer" in winner:
            assert escrow.state == "RELEASED"
            assert payment_commands(escrow_id) == {"TransferToSeller": 1}
            assert escrow.paid_out_minor + escrow.fee_minor == escrow.received_minor
        else:
            assert escrow.state == "DISPUTED"
            assert payment_commands(escrow_id) == {}
            assert escrow.held_minor == escrow.received_minor
        assert EscrowEvent.objects.filter(escrow_id=escrow_id, type__regex=r"(ReleaseRequested|Disputed)$").count() == 1


def test_cancel_and_dispute_racing_on_a_funded_escrow(api_client, buyer, seller, staff):
    for _ in range(ROUNDS):
        escrow_id = funded_escrow(api_client(buyer), seller)
        racers: dict[str, Callable[[], Any]] = {}
        for n in range(2):
            racers[f"seller cancel#{n}"] = partial(act, api_client(seller), escrow_id, "cancel", {"reason": "gone"})
            racers[f"staff cancel#{n}"] = partial(
                act, api_client(staff), escrow_id, "cancel", {"reason": "fraud"}, HTTP_IDEMPOTENCY_KEY=new_key()
            )
            racers[f"buyer dispute#{n}"] = partial(act, api_client(buyer), escrow_id, "dispute", {"reason": "x"})
            racers[f"seller dispute#{n}"] = partial(act, api_client(seller), escrow_id, "dispute", {"reason": "y"})

        winner = _race(escrow_id, racers)

        escrow = Escrow.objects.get(pk=escrow_id)
        if "cancel" in winner:
            assert escrow.state == "REFUNDED"
            assert payment_commands(escrow_id) == {"InitiateRefund": 1}
            assert escrow.refunded_minor == escrow.received_minor
        else:
            assert escrow.state == "DISPUTED"
            assert payment_commands(escrow_id) == {}


def test_cancels_and_the_funding_timer_racing_on_an_unfunded_escrow(api_client, buyer, seller, staff):
    for _ in range(ROUNDS):
        escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]
        settle()
        Escrow.objects.filter(pk=escrow_id).update(funding_deadline=timezone.now() - timezone.timedelta(seconds=1))
        racers: dict[str, Callable[[], Any]] = {}
        for n in range(2):
            racers[f"buyer cancel#{n}"] = partial(act, api_client(buyer), escrow_id, "cancel", {"reason": "no"})
            racers[f"seller cancel#{n}"] = partial(act, api_client(seller), escrow_id, "cancel", {"reason": "no"})
            racers[f"staff cancel#{n}"] = partial(act, api_client(staff), escrow_id, "cancel", {"reason": "no"})
            racers[f"timer#{n}"] = fire_due_timers

        _race(escrow_id, racers)

        escrow = Escrow.objects.get(pk=escrow_id)
        assert escrow.state == "CANCELLED" and escrow.received_minor == 0
        assert payment_commands(escrow_id) == {}
        assert EscrowEvent.objects.filter(escrow_id=escrow_id, type__endswith="EscrowCancelled").count() == 1


# --- one Idempotency-Key, many identical and conflicting requests ----------------------------------------


def test_one_key_racing_with_two_bodies_has_one_effect(api_client, buyer, seller):
    """Ten requests share one key: five with the winner's body, five with another. Exactly one takes
    effect; the same body gets the replay or 409 in flight, the other body 422 or 409 in flight."""
    for _ in range(ROUNDS):
        escrow_id = funded_escrow(api_client(buyer), seller)
        key = new_key()
        bodies = [{"reason": "never arrived"}, {"reason": "wrong item"}] * 5

        answers = at_once(
            *[partial(act, api_client(buyer), escrow_id, "dispute", body, HTTP_IDEMPOTENCY_KEY=key) for body in bodies]
        )

        first = [a for a in answers if a.status_code == 202 and "Idempotent-Replayed" not in a]
        assert len(first) == 1, [a.status_code for a in answers]
        winning_body = bodies[answers.index(first[0])]
        for body, answer in zip(bodies, answers, strict=True):
            if answer is first[0]:
                continue
            if answer.status_code == 409:
                assert_problem(answer, 409, "idempotency_key_in_flight")
            elif body == winning_body:
                assert answer.status_code == 202 and answer["Idempotent-Replayed"] == "true"
                assert answer.json()["command_id"] == first[0].json()["command_id"]
            else:
                assert_problem(answer, 422, "idempotency_key_reused")
        FIGURES["idempotency races"] += 1
        FIGURES["idempotent requests"] += len(bodies)
        record_figures("races", dict(FIGURES))
        settle()
        assert EscrowEvent.objects.filter(escrow_id=escrow_id, type__endswith="EscrowDisputed").count() == 1
        disputed = EscrowEvent.objects.get(escrow_id=escrow_id, type__endswith="EscrowDisputed")
        assert disputed.data["reason"] == winning_body["reason"]
        assert_records_agree(escrow_id)
        # afterwards the key replays the first answer, whoever asks again with that body
        again = act(api_client(buyer), escrow_id, "dispute", winning_body, HTTP_IDEMPOTENCY_KEY=key)
        assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
