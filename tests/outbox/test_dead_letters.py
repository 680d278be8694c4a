"""A handler that keeps failing is retried with backoff, then dead-lettered with its error; the
subscriber moves on; after the fix, the dead letter is replayed (command or function) exactly once."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from apps.outbox.drain import drain_subscriber
from apps.outbox.models import DeadLetter, ProcessedMessage
from apps.outbox.public import lag
from apps.outbox.retry import replay_dead_letter
from tests.helpers import as_staff
from tests.outbox.support import Recorder, installed, new_escrow_id, publish_event

pytestmark = pytest.mark.django_db(transaction=True)

FAST_RETRIES = {"BUS_RETRY_BASE_SECONDS": 0.001, "BUS_MAX_ATTEMPTS": 3}


def test_a_poison_message_is_retried_dead_lettered_and_does_not_stop_the_rest(caplog):
    recorder = Recorder("poisoned")
    escrow_id = new_escrow_id()
    with installed(recorder, **FAST_RETRIES) as (sub,):
        poison = publish_event(escrow_id, 1)
        recorder.failing.add(poison.event_id)
        later = publish_event(escrow_id, 2)

        with caplog.at_level("WARNING", logger="apps.outbox.retry"):
            drain_subscriber(sub)

        assert recorder.calls[poison.event_id] == 3  # every attempt ran, none left an effect
        # Backoff grows by 4x per attempt (the schedule, not a measured time).
        retries = [r for r in caplog.records if r.getMessage() == "bus handler failed, will retry"]
        assert [r.retry_in_s for r in retries] == [0.001, 0.004]
        assert [r.attempt for r in retries] == [1, 2]
        letter = DeadLetter.objects.get(subscriber=sub.name)
        assert letter.event_id == poison.event_id and letter.message_id == poison.id
        assert letter.status == DeadLetter.Status.OPEN and letter.attempts == 3
        assert "poison message" in letter.error and "RuntimeError" in letter.error
        assert not ProcessedMessage.objects.filter(subscriber=sub.name, event_id=poison.event_id).exists()
        # The subscriber moved on: the later message was delivered, and nothing is pending.
        assert [e for _, _, e in recorder.committed] == [later.event_id]
        assert recorder.effects() == 1
        assert lag(sub) == 0

        # Draining again does not retry a dead letter (it waits for an operator).
        drain_subscriber(sub)
        assert recorder.calls[poison.event_id] == 3


def test_replay_dead_letters_command_while_failing_then_after_the_fix():
    recorder = Recorder("replayed-by-command")
    with installed(recorder, **FAST_RETRIES) as (sub,):
        poison = publish_event(new_escrow_id(), 1)
        recorder.failing.add(poison.event_id)
        drain_subscriber(sub)
        letter = DeadLetter.objects.get(subscriber=sub.name)

        out = io.StringIO()
        call_command("replay_dead_letters", *as_staff(), stdout=out)
        assert "0 replayed, 1 still failing" in out.getvalue()
        letter.refresh_from_db()
        assert letter.status == DeadLetter.Status.OPEN and letter.resolved_at is None
        assert recorder.effects() == 0

        recorder.failing.clear()  # the fix is deployed
        out = io.StringIO()
        call_command("replay_dead_letters", "--subscriber", sub.name, *as_staff(), stdout=out)
        assert "1 replayed, 0 still failing" in out.getvalue()
        letter.refresh_from_db()
        assert letter.status == DeadLetter.Status.REPLAYED and letter.resolved_at is not None
        assert recorder.effects() == 1
        assert ProcessedMessage.objects.filter(subscriber=sub.name, event_id=poison.event_id).exists()

        out = io.StringIO()
        call_command("replay_dead_letters", *as_staff(), stdout=out)  # nothing open any more: no second effect
        assert "0 considered" in out.getvalue()
        assert recorder.effects() == 1


def test_replay_dead_letter_function_applies_once():
    recorder = Recorder("replayed-by-function")
    with installed(recorder, **FAST_RETRIES) as (sub,):
        poison = publish_event(new_escrow_id(), 1)
        recorder.failing.add(poison.event_id)
        drain_subscriber(sub)
        letter = DeadLetter.objects.get(subscriber=sub.name)

        with pytest.raises(RuntimeError, match="poison"):
            replay_dead_letter(letter)
        assert DeadLetter.objects.get(pk=letter.pk).status == DeadLetter.Status.OPEN

        recorder.failing.clear()
        assert replay_dead_letter(letter) is True
        assert replay_dead_letter(letter) is False  # already replayed: a no-op
        assert recorder.effects() == 1
        assert DeadLetter.objects.get(pk=letter.pk).status == DeadLetter.Status.REPLAYED
