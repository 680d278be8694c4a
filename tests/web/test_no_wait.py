"""A form's command never waits for the read model: the redirect comes at once, and the deal page, until
the read model shows the command, is a short page that reloads itself (the browser polls, not a worker).
The bus is left undelivered here (inline dispatch off, no worker) until the test settles it."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.gateway.support import settle
from tests.web.conftest import csrf_token, new_deal


def _post(client: Any, path: str, data: dict[str, Any] | None = None) -> Any:
    body = {"csrfmiddlewaretoken": csrf_token(client), "nonce": str(uuid.uuid4()), **(data or {})}
    return client.post(path, body)


def _updating(response: Any) -> bool:
    html = response.content.decode()
    return response.status_code == 200 and 'http-equiv="refresh"' in html and "Updating" in html


def test_a_new_deal_redirects_at_once_and_the_page_catches_up(browser_of, buyer, seller, settings):
    settings.BUS_INLINE_DISPATCH = False
    as_buyer = browser_of(buyer)
    token = csrf_token(as_buyer, "/deals/new")
    with CaptureQueriesContext(connection) as captured:
        response = as_buyer.post(
            "/deals/new",
            {
                "csrfmiddlewaretoken": token,
                "nonce": str(uuid.uuid4()),
                "role": "buyer",
                "counterparty": seller.username,
                "amount": "20.00",
                "currency": "USD",
                "description": "a sword",
            },
        )
    assert response.status_code == 302, response.content.decode()[:1000]
    assert not [q for q in captured.captured_queries if "projections_escrowview" in q["sql"]]  # no polling
    escrow_id = re.match(r"^/deals/([0-9a-f-]{36})$", response["Location"]).group(1)

    # not in the read model yet: the updating page, not a 404, and again on its reload
    assert _updating(as_buyer.get(f"/deals/{escrow_id}"))
    assert _updating(as_buyer.get(f"/deals/{escrow_id}"))
    settle()
    page = as_buyer.get(f"/deals/{escrow_id}")
    assert page.status_code == 200 and 'data-state="AWAIT_ACCEPTANCE"' in page.content.decode()


def test_an_action_shows_the_updating_page_until_the_read_model_has_it(browser_of, buyer, seller, settings):
    as_buyer, as_seller = browser_of(buyer), browser_of(seller)
    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    settings.BUS_INLINE_DISPATCH = False
    assert _post(as_seller, f"/deals/{escrow_id}/accept").status_code == 302
    assert _updating(as_seller.get(f"/deals/{escrow_id}"))
    # someone else's view of the deal is not held up by it
    assert 'data-state="AWAIT_ACCEPTANCE"' in as_buyer.get(f"/deals/{escrow_id}").content.decode()
    settle()
    assert 'data-state="AWAIT_FUNDS"' in as_seller.get(f"/deals/{escrow_id}").content.decode()


def test_the_updating_page_gives_up_after_a_few_reloads(browser_of, buyer, seller, settings):
    from apps.web import views

    as_buyer, as_seller = browser_of(buyer), browser_of(seller)
    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    settings.BUS_INLINE_DISPATCH = False
    assert _post(as_seller, f"/deals/{escrow_id}/accept").status_code == 302
    for _ in range(views.UPDATING_RELOADS):
        assert _updating(as_seller.get(f"/deals/{escrow_id}"))
    page = as_seller.get(f"/deals/{escrow_id}")
    assert page.status_code == 200 and 'data-state="AWAIT_ACCEPTANCE"' in page.content.decode()
    settle()


def test_a_stranger_never_sees_the_updating_page(browser_of, buyer, seller, stranger, settings):
    as_buyer, as_stranger = browser_of(buyer), browser_of(stranger)
    escrow_id = new_deal(as_buyer, counterparty=seller.username)
    settings.BUS_INLINE_DISPATCH = False
    assert as_stranger.get(f"/deals/{escrow_id}").status_code == 404
