"""Signed-in browser sessions for the web app's page tests."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from tests.gateway.support import settle


@pytest.fixture
def browser_of() -> Callable[..., Client]:
    """browser_of(user) -> a Client signed in as that user, with CSRF checks on like a real browser."""

    def make(user: Any) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return make


def csrf_token(client: Client, path: str = "/deals/") -> str:
    client.get(path)
    return client.cookies["csrftoken"].value


def post_form(
    client: Client, path: str, data: dict[str, Any] | None = None, *, nonce: str | None = None, follow: bool = False
) -> Any:
    """A form post as the page sends it: the CSRF token and a fresh nonce."""
    body = {"csrfmiddlewaretoken": csrf_token(client), "nonce": nonce or str(uuid.uuid4()), **(data or {})}
    response = client.post(path, body, follow=follow)
    settle()
    return response


def new_deal(
    client: Client,
    *,
    counterparty: str,
    amount: str = "149.99",
    role: str = "buyer",
    description: str = "Dominus Empyreus",
    nonce: str | None = None,
) -> str:
    response = post_form(
        client,
        "/deals/new",
        {"role": role, "counterparty": counterparty, "amount": amount, "currency": "USD", "description": description},
        nonce=nonce,
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    found = re.match(r"^/deals/([0-9a-f-]{36})$", response["Location"])
    assert found, response["Location"]
    return found.group(1)


def pay_on_checkout(client: Client, escrow_id: str, card_number: str = "4242 4242 4242 4242") -> Any:
    """The buyer follows the deal page's Pay link to the checkout page and pays with a card."""
    page = client.get(f"/deals/{escrow_id}").content.decode()
    link = re.search(r'id="action-pay" href="([^"]+)"', page)
    assert link, "the deal page has no Pay link"
    client.get(link.group(1))
    response = client.post(
        link.group(1), {"csrfmiddlewaretoken": client.cookies["csrftoken"].value, "card_number": card_number}
    )
    settle()
    return response
