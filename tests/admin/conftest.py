"""Staff with the real groups from `setup_staff_groups`, and a disputed escrow reached through the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from apps.gateway.management.commands.setup_staff_groups import staff_groups_setup
from tests.factories import UserFactory
from tests.gateway.support import settle
from tests.helpers import act, create_escrow, pay

PASSWORD = "correct horse battery staple 42"


def staff_member(username: str, group: str) -> Any:
    staff_groups_setup()
    user = UserFactory(username=username, is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def agent(transactional_db: None) -> Any:
    return staff_member("agent_smith", "dispute_agent")


@pytest.fixture
def ops_user(transactional_db: None) -> Any:
    return staff_member("ops_olivia", "ops")


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def disputed(api_client: Any, buyer: Any, seller: Any) -> str:
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="100.00")["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    settle()
    assert act(api_client(seller), escrow_id, "deliver").status_code == 202
    assert act(as_buyer, escrow_id, "dispute", {"reason": "the item was a duplicate"}).status_code == 202
    settle()
    return escrow_id
