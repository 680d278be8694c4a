"""Deferred answers followed up through the interaction webhook, and the slash commands registered with
Discord, both against the fake Discord."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apps.discord.commands import COMMANDS
from apps.discord.followups import send_due_followups
from apps.discord.models import FollowUp
from apps.escrow.models import Escrow
from apps.outbox.worker import BusWorker
from tests.discord.conftest import APPLICATION_ID, BOT_TOKEN, DiscordUser, Sent, create_options, slash
from tests.fakes.discord import FakeDiscord

pytestmark = pytest.mark.django_db(transaction=True)

BUYER = DiscordUser("1700000000000000001", "patient_buyer")
SELLER = DiscordUser("1700000000000000002", "patient_seller")


@pytest.fixture
def lagging_read_model(settings: Any) -> None:
    """No inline delivery: the read model shows a command only after a bus worker pass."""
    settings.BUS_INLINE_DISPATCH = False
    settings.DISCORD_REPLY_WAIT_SECONDS = 0


def test_a_command_the_read_model_has_not_caught_up_with_is_deferred_then_followed_up(
    interact: Callable[[dict[str, Any]], Sent], fake_discord: FakeDiscord, lagging_read_model: None
) -> None:
    payload = slash(BUYER, "create", create_options(SELLER), resolved_users=[SELLER])

    deferred = interact(payload)

    assert deferred.body == {"type": 5, "data": {"flags": 64}}
    assert Escrow.objects.count() == 1  # the command itself is done; only the answer waits
    assert send_due_followups() == 0  # nothing to show yet: the read model has not seen it
    assert fake_discord.followups == []

    BusWorker(ticks=[send_due_followups], poll_seconds=0).run_once()

    [sent] = fake_discord.followups
    assert (sent.method, sent.application_id, sent.token, sent.target) == (
        "PATCH",
        APPLICATION_ID,
        payload["token"],
        "@original",
    )
    escrow_id = str(Escrow.objects.get().pk)
    assert "Deal opened" in sent.body["content"] and "State: **AWAIT_ACCEPTANCE**" in sent.body["content"]
    assert escrow_id in sent.body["content"]
    assert [b["custom_id"] for b in sent.body["components"][0]["components"]] == [f"escrow:cancel:{escrow_id}"]
    assert FollowUp.objects.get().status == "sent"

    # Sent once: later passes and a redelivered interaction send nothing more.
    assert interact(payload).body == deferred.body
    BusWorker(ticks=[send_due_followups], poll_seconds=0).run_once()
    assert len(fake_discord.followups) == 1


def test_a_follow_up_whose_token_expired_is_given_up(
    interact: Callable[[dict[str, Any]], Sent], fake_discord: FakeDiscord, lagging_read_model: None
) -> None:
    payload = slash(BUYER, "create", create_options(SELLER), resolved_users=[SELLER])
    interact(payload)
    fake_discord.expire_token(payload["token"])

    BusWorker(ticks=[send_due_followups], poll_seconds=0).run_once()

    follow_up = FollowUp.objects.get()
    assert follow_up.status == "failed" and "404" in follow_up.last_error
    assert fake_discord.followups == []


def test_a_follow_up_older_than_the_token_is_not_attempted(
    interact: Callable[[dict[str, Any]], Sent], fake_discord: FakeDiscord, lagging_read_model: None
) -> None:
    interact(slash(BUYER, "create", create_options(SELLER), resolved_users=[SELLER]))
    FollowUp.objects.update(created_at=FollowUp.objects.get().created_at - datetime.timedelta(minutes=15))

    BusWorker(ticks=[send_due_followups], poll_seconds=0).run_once()

    assert FollowUp.objects.get().status == "failed"
    assert [e for e in fake_discord.exchanges if e.path.startswith("/api/v10/webhooks/")] == []


def test_sync_registers_the_escrow_command_with_its_subcommands(
    fake_discord: FakeDiscord, settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.DISCORD_APPLICATION_ID = APPLICATION_ID

    call_command("discord_commands", "sync")

    [(application_id, commands)] = fake_discord.registrations
    assert application_id == APPLICATION_ID
    assert commands == COMMANDS
    [escrow] = commands
    subs = {o["name"]: o for o in escrow["options"]}
    assert set(subs) == {"create", "list", "status"}
    create = {o["name"]: o for o in subs["create"]["options"]}
    assert create["counterparty"]["type"] == 6 and create["amount"]["type"] == 3
    assert [c["value"] for c in create["role"]["choices"]] == ["buyer", "seller"]
    assert not create["role"]["required"]
    assert "registered /escrow" in capsys.readouterr().out
    [exchange] = fake_discord.exchanges
    assert (exchange.method, exchange.path, exchange.status) == (
        "PUT",
        f"/api/v10/applications/{APPLICATION_ID}/commands",
        200,
    )


def test_sync_with_a_wrong_bot_token_fails_loudly(fake_discord: FakeDiscord, settings: Any) -> None:
    settings.DISCORD_APPLICATION_ID = APPLICATION_ID
    settings.DISCORD_BOT_TOKEN = BOT_TOKEN + "-wrong"

    with pytest.raises(CommandError, match="401"):
        call_command("discord_commands", "sync")
    assert fake_discord.registrations == []


def test_sync_without_an_application_id_says_what_is_missing(settings: Any) -> None:
    settings.DISCORD_APPLICATION_ID = ""

    with pytest.raises(CommandError, match="DISCORD_APPLICATION_ID"):
        call_command("discord_commands", "sync")
