"""A deal that names `discord:<id>` for someone with no account waits for them: their first sign-in with
that Discord id lands in the account the deal names, and the deal is theirs to accept."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.escrow.models import Escrow
from apps.escrow.public import allowed_actions
from tests.factories import UserFactory
from tests.fakes.discord_oauth import FakeDiscordOAuth
from tests.gateway.support import settle
from tests.helpers import client_for
from tests.web.test_discord_signin import ALICE, discord, sign_in  # noqa: F401 - `discord` is a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_deal_is_waiting_in_the_account_of_the_first_discord_sign_in(discord: FakeDiscordOAuth) -> None:  # noqa: F811
    seller = UserFactory(username="sells_helms")
    proposed = client_for(seller).post(
        "/api/v1/escrows",
        {
            "role": "seller",
            "counterparty": f"discord:{ALICE.id}",
            "amount": "75.00",
            "currency": "USD",
            "description": "Valkyrie Helm",
        },
        format="json",
    )
    assert proposed.status_code == 202, proposed.content
    settle()
    escrow = Escrow.objects.get(pk=proposed.json()["escrow_id"])

    browser = Client(enforce_csrf_checks=True)
    sign_in(browser, discord, ALICE)
    signed_in: Any = browser.get("/deals/").context["user"]

    assert signed_in.pk == escrow.buyer_id
    assert allowed_actions(escrow, signed_in.pk) == ["accept", "decline"]
    accepted = client_for(signed_in).post(f"/api/v1/escrows/{escrow.pk}/accept", {}, format="json")
    assert accepted.status_code == 202 and accepted.json()["state"] == "AWAIT_FUNDS"
