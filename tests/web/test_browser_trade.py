"""Two people, two headless Chromium sessions, one server started as `make run` starts it
(`manage.py serve`): a whole card trade from sign-in to RELEASED without typing a command, and the same
deal through the REST API. Screenshots of every page go to a temporary directory (printed), never the
work tree."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.escrow.models import Escrow
from apps.gateway.tokens import mint_access_token
from tests.serving import CHROMEDRIVER, CHROMIUM, NO_CHROMIUM, chromium, served

pytestmark = [
    pytest.mark.postgres_only,  # the server is a second process on the test database
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_CHROMIUM),
]


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="escrow-web-screens-"))
    print(f"\nscreenshots: {folder}")
    return folder


class Person:
    """One person in their own browser."""

    def __init__(self, driver: Any, base: str, name: str, shots: Path) -> None:
        self.driver, self.base, self.name, self.shots = driver, base, name, shots
        self.count = 0

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, *, seconds: float = 30.0) -> Any:
        """The element once the page showing it has loaded: a click that starts a chain of redirects
        (a sign-in through Discord) returns before the last page of the chain is there."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, seconds, poll_frequency=0.1).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)),
            f"{self.name}: no {css} on {self.driver.current_url}",
        )

    def wait_until(self, condition: Any, *, seconds: float = 30.0) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, seconds).until(lambda _: condition())

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base}{path}")

    def shot(self, what: str) -> None:
        self.count += 1
        self.driver.save_screenshot(str(self.shots / f"{self.name}-{self.count:02d}-{what}.png"))

    def sign_in_as_new(self, username: str) -> None:
        self.open("/")
        self.shot("home")
        self.driver.find_element("link text", "Sign in to trade").click()
        assert "SANDBOX" in self.find(".sandbox-banner").text
        self.find("#id_username").send_keys(username)
        self.shot("signin")
        self.find("#signin-create").click()
        assert self.wait_for("#signed-in-as").text == username

    def state(self) -> str:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        try:
            return self.find("#deal-state").get_attribute("data-state") or ""
        except StaleElementReferenceException:
            return ""  # the page reloaded between finding the element and reading it: read again next round
        except NoSuchElementException:
            return ""  # the "Updating…" page: the deal page has not caught up with the last action yet

    def wait_for_state(self, state: str, *, seconds: float = 60.0) -> None:
        """Reloads the deal page until it shows `state` (money moves through the bus worker)."""
        deadline = time.monotonic() + seconds
        while self.state() != state:
            assert time.monotonic() < deadline, f"{self.name} still sees {self.state()}, not {state}"
            time.sleep(0.2)
            self.driver.refresh()

    def timeline(self) -> list[tuple[str, str]]:
        return [
            (li.get_attribute("data-type"), li.find_element("css selector", "time").get_attribute("datetime"))
            for li in self.finds("#timeline li[data-type]")
        ]


@pytest.fixture
def two_people(transactional_db: None, shots: Path) -> Iterator[tuple[Person, Person, str]]:
    with served(env={"DEBUG": "0", "SANDBOX_SIGNIN": "1", "PAYMENTS_PROVIDER": "sandbox"}) as (base, _proc):
        with chromium() as first, chromium() as second:
            yield Person(first, base, "buyer", shots), Person(second, base, "seller", shots), base


def test_a_card_trade_between_two_people_in_two_browsers(two_people: Any) -> None:
    buyer, seller, base = two_people
    seller.sign_in_as_new("bob_sells")
    buyer.sign_in_as_new("alice_buys")
    buyer.shot("my-deals-empty")

    # the buyer opens the deal
    buyer.driver.find_element("link text", "New deal").click()
    buyer.find("input[name=role][value=buyer]").click()
    buyer.find("#id_counterparty").send_keys("bob_sells")
    buyer.find("#id_amount").send_keys("149.99")
    buyer.find("#id_description").send_keys("Dominus Empyreus, traded in Roblox")
    buyer.find("#id_inspection_period_hours").send_keys("48")
    buyer.shot("new-deal")
    buyer.find("#create-deal").click()
    # the click returns before the redirect to the new deal's page has always arrived
    buyer.wait_until(lambda: not buyer.driver.current_url.endswith("/deals/new"))
    deal_path = buyer.driver.current_url.removeprefix(base)
    assert deal_path.startswith("/deals/")
    escrow_id = deal_path.removeprefix("/deals/")
    buyer.shot("deal-created")

    # the seller finds it under "Selling"
    seller.open("/deals/")
    seller.driver.find_element("partial link text", "Dominus Empyreus").click()
    seller.shot("deal-seen-by-seller")
    seller.wait_for_state("AWAIT_ACCEPTANCE")
    seller.find("#action-accept").click()
    seller.shot("deal-accepted")
    assert not seller.finds("#action-pay")

    # the buyer pays on the sandbox checkout page
    buyer.driver.refresh()
    buyer.wait_for_state("AWAIT_FUNDS")
    buyer.find("#action-pay").click()
    buyer.shot("checkout")
    buyer.find("#card_number").send_keys("4242 4242 4242 4242")
    buyer.find("main form button[type=submit]").click()
    buyer.wait_for_state("FUNDS_HELD")
    buyer.shot("deal-paid")
    assert not buyer.finds("#action-deliver")

    # the seller delivers
    seller.wait_for_state("FUNDS_HELD")
    seller.find("#action-deliver").click()
    seller.wait_for_state("DELIVERED")
    seller.shot("deal-delivered")

    # the buyer releases
    buyer.wait_for_state("DELIVERED")
    buyer.shot("deal-to-release")
    buyer.find("#action-release").click()
    buyer.wait_for_state("RELEASED")
    seller.wait_for_state("RELEASED")
    buyer.shot("deal-released")
    seller.shot("deal-released")
    assert buyer.find("#no-actions") and seller.find("#no-actions")

    # both see the same timeline, ending with the seller paid
    assert buyer.timeline() == seller.timeline()
    types = [entry[0] for entry in buyer.timeline()]
    assert types[0] == "EscrowCreated" and types[-1] == "EscrowReleased"
    assert {"EscrowFundsHeld", "EscrowDelivered", "EscrowReleaseRequested"} <= set(types)

    # a phone-sized window: the same page, one column
    buyer.driver.set_window_size(390, 844)
    buyer.driver.refresh()
    buyer.shot("deal-released-narrow")
    assert buyer.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")

    seller.open("/deals/")
    assert "Completed" in seller.find("#closed ~ table, section:last-of-type").text
    seller.shot("my-deals-finished")
    for page in ("/settings/payout", "/settings/notifications"):
        seller.open(page)
        seller.shot(page.rsplit("/", 1)[-1])

    # the same deal, through the REST API
    escrow = Escrow.objects.get(pk=escrow_id)
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{base}/api/v1/escrows/{escrow_id}", headers={"Authorization": f"Bearer {mint_access_token(escrow.buyer)}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert body["state"] == "RELEASED" and body["amount"] == "149.99"
    assert body["seller"] == escrow.seller_id and escrow.seller.username == "bob_sells"
