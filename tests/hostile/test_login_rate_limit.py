"""Staff login attempts are rate limited per client address and per username."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/admin/login/"


def attempt(client: Client, username: str, address: str = "10.0.0.1") -> int:
    return client.post(LOGIN, {"username": username, "password": "wrong-guess"}, REMOTE_ADDR=address).status_code


def test_the_eleventh_guess_within_a_minute_is_refused(staff, settings):
    settings.LOGIN_RATE_LIMIT = "10/min"
    client = Client()

    answers = [attempt(client, staff.username) for _ in range(10)]
    refused = client.post(LOGIN, {"username": staff.username, "password": "wrong-guess"}, REMOTE_ADDR="10.0.0.1")

    assert answers == [200] * 10  # the form answers "wrong password", no session
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session


def test_one_username_is_limited_across_addresses_and_one_address_across_usernames(staff, settings):
    settings.LOGIN_RATE_LIMIT = "3/min"
    client = Client()

    assert [attempt(client, staff.username, f"10.0.1.{n}") for n in range(4)] == [200, 200, 200, 429]
    assert [attempt(client, f"guess{n}", "10.0.2.1") for n in range(4)] == [200, 200, 200, 429]
    assert attempt(client, "someone-else", "10.0.3.1") == 200


def test_reads_of_the_login_page_are_not_counted(settings):
    settings.LOGIN_RATE_LIMIT = "1/min"
    client = Client()

    assert [client.get(LOGIN).status_code for _ in range(5)] == [200] * 5
