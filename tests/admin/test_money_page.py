"""The state of the money on the ops desk: the invariant's totals by rail and currency agree with the
escrow books after real lifecycles through the API, today's movements and money held by state are there,
the last 30 days are drawn as an SVG chart (nothing loaded from elsewhere), and only staff who may view
escrows see it."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import pytest
from django.db.models import Sum

from apps.escrow.models import Escrow
from tests.admin.conftest import PASSWORD, logged_in
from tests.admin.test_browser import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 - fixture
from tests.admin.test_mfa import fresh_code
from tests.factories import UserFactory
from tests.gateway.support import settle
from tests.helpers import act, create_escrow, pay

PAGE = "/admin/escrow/escrow/ops/money/"


def trades(api_client: Any, buyer: Any, seller: Any) -> dict[str, str]:
    """One released, one refunded (cancelled after funding by the seller), one held, one unpaid."""
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    ids = {
        name: create_escrow(as_buyer, seller=seller, amount=amount)["escrow_id"]
        for name, amount in (("released", "200.00"), ("refunded", "50.00"), ("held", "75.25"), ("unpaid", "10.00"))
    }
    for name in ("released", "refunded", "held"):
        assert pay(as_buyer, ids[name]).status_code == 202
    settle()
    assert act(as_seller, ids["released"], "deliver").status_code == 202
    assert act(as_buyer, ids["released"], "release").status_code == 202
    assert act(as_seller, ids["refunded"], "cancel").status_code == 202
    settle()
    states = dict(Escrow.objects.values_list("id", "state"))
    assert [states[uuid.UUID(ids[n])] for n in ("released", "refunded", "held", "unpaid")] == [
        "RELEASED",
        "REFUNDED",
        "FUNDS_HELD",
        "AWAIT_FUNDS",
    ]
    return ids


def cells(html: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert table, table_id
    body = table.group(1).split("<tbody>")[1]
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def test_the_money_page_shows_the_books_by_rail_and_currency(
    api_client: Any, buyer: Any, seller: Any, ops_user: Any
) -> None:
    trades(api_client, buyer, seller)
    response = logged_in(ops_user).get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()

    books = Escrow.objects.aggregate(
        **{f: Sum(f) for f in ("received_minor", "paid_out_minor", "refunded_minor", "fee_minor", "held_minor")}
    )
    rows = cells(html, "money-totals")
    sandbox = [r for r in rows if r[0] == "sandbox"]
    assert len(sandbox) == 1
    rail, currency, count, received, paid_out, refunded, fees, held, invariant = sandbox[0]
    # the unpaid escrow has its payment order on the sandbox rail too (received 0)
    assert (currency, count, invariant) == ("USD", "4", "balanced")
    assert int(received) == books["received_minor"] == 20000 + 5000 + 7525
    assert int(paid_out) == books["paid_out_minor"] and int(paid_out) > 0
    assert int(refunded) == books["refunded_minor"] == 5000
    assert int(fees) == books["fee_minor"] == 500  # 2.5% of 200.00
    assert int(held) == books["held_minor"] == 7525
    assert sum(int(r[2]) for r in rows) == 4  # each escrow counted once

    [today] = cells(html, "money-today")
    assert today == ["USD", "32525", "20000", "5000"]
    assert ["FUNDS_HELD", "USD", "7525", "1"] in cells(html, "money-held-by-state")

    svg = re.search(r'<figure id="money-chart-USD">(<svg .*?</svg>)</figure>', html, re.S)
    assert svg, "no chart"
    assert len(re.findall(r'<rect class="bar-(held|released|refunded)"', svg.group(1))) == 3
    assert "http" not in svg.group(1).replace("http://www.w3.org/2000/svg", "")
    assert (
        'href="/admin/escrow/escrow/ops/money/"'
        in logged_in(ops_user).get("/admin/escrow/escrow/ops/").content.decode()
    )


def test_the_money_page_is_for_staff_who_may_view_escrows(transactional_db: None) -> None:
    plain_staff = UserFactory(username="no_perms", is_staff=True)
    assert logged_in(plain_staff).get(PAGE).status_code == 403
    assert logged_in(UserFactory(username="customer")).get(PAGE).status_code == 302  # to the login


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="headless Chromium not installed")
def test_the_chart_renders_in_a_browser(
    live_server: Any,
    browser: Any,  # noqa: F811 - the fixture
    api_client: Any,
    buyer: Any,
    seller: Any,
    ops_user: Any,
) -> None:
    from selenium.webdriver.common.by import By

    from apps.gateway.mfa import enroll_totp

    trades(api_client, buyer, seller)
    enroll_totp(user=ops_user)
    browser.set_window_size(1300, 1400)
    browser.get(f"{live_server.url}/admin/login/?next={PAGE}")
    browser.find_element(By.NAME, "username").send_keys(ops_user.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.NAME, "otp_code").send_keys(fresh_code(ops_user))
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()

    chart = browser.find_element(By.CSS_SELECTOR, "#money-chart-USD svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 100
    bars = browser.find_elements(By.CSS_SELECTOR, "#money-chart-USD rect.bar-held")
    assert bars and bars[0].size["height"] > 0
    if os.environ.get("SCREENSHOT_DIR"):
        browser.save_screenshot(os.path.join(os.environ["SCREENSHOT_DIR"], "ops-money.png"))
