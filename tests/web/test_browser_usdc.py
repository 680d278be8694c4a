"""A USDC deal in real browsers against `manage.py serve` in a production-like configuration
(PAYMENTS_PROVIDER=live, so no sandbox sign-in): two people sign in with Discord (a fake Discord OAuth2
server), the seller opens a deal above the card limit, the buyer accepts it and reaches the deposit page
(amount, network, address as text and QR code, deadline). The custodian and the screening vendors are
local fakes; screenshots go to a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.fakes.custodian_server import USDC_TOKEN_ID, FakeCustodian
from tests.fakes.discord_oauth import CLIENT_ID, CLIENT_SECRET, DiscordPerson, FakeDiscordOAuth
from tests.fakes.screening_server import CHAINALYSIS_KEY, TRM_KEY, FakeScreening
from tests.serving import CHROMEDRIVER, CHROMIUM, NO_CHROMIUM, chromium, served
from tests.web.test_browser_trade import Person, shots  # noqa: F401 - the screenshot directory fixture

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_CHROMIUM),
]

SELLER = DiscordPerson(id="712345678901234567", username="sam_sells_big")
BUYER = DiscordPerson(id="712345678901234568", username="bea_buys_big")


@pytest.fixture
def loopback() -> Iterator[Any]:
    started: list[HTTPServer] = []

    def start() -> HTTPServer:
        server = HTTPServer(host="127.0.0.1", port=0)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.clear()
        server.stop()


@pytest.fixture
def live_world(transactional_db: None, loopback: Any, shots: Path) -> Iterator[tuple[Person, Person, str, Any]]:  # noqa: F811
    discord = FakeDiscordOAuth(loopback())
    custodian = FakeCustodian(loopback())
    screening = FakeScreening(loopback())
    env = {
        "DEBUG": "0",
        "PAYMENTS_PROVIDER": "live",
        "STRIPE_SECRET_KEY": "sk_test_unused",
        "CUSTODIAN_API_BASE": custodian.api_base,
        "CUSTODIAN_API_KEY": custodian.api_key,
        "CUSTODIAN_USDC_TOKEN_ID": USDC_TOKEN_ID,
        "TRM_API_BASE": screening.api_base,
        "CHAINALYSIS_API_BASE": screening.api_base,
        "TRM_API_KEY": TRM_KEY,
        "CHAINALYSIS_API_KEY": CHAINALYSIS_KEY,
        "DISCORD_CLIENT_ID": CLIENT_ID,
        "DISCORD_CLIENT_SECRET": CLIENT_SECRET,
        "DISCORD_OAUTH_BASE": discord.base_url,
    }
    with served(env=env) as (base, _proc):
        with chromium() as first, chromium() as second:
            yield Person(first, base, "usdc-seller", shots), Person(second, base, "usdc-buyer", shots), base, discord


def sign_in_with_discord(person: Person, discord: FakeDiscordOAuth, who: DiscordPerson) -> None:
    discord.person = who  # the person signed in to Discord in this browser approves at once
    person.open("/signin/")
    assert not person.finds(".sandbox-banner") and not person.finds("#signin-create")
    person.shot("signin")
    person.find("#signin-discord").click()
    assert person.wait_for("#signed-in-as").text == who.username


def test_a_seller_created_usdc_deal_up_to_the_deposit_page(live_world: Any) -> None:
    seller, buyer, base, discord = live_world
    sign_in_with_discord(buyer, discord, BUYER)
    sign_in_with_discord(seller, discord, SELLER)

    seller.driver.find_element("link text", "New deal").click()
    seller.find("input[name=role][value=seller]").click()
    seller.find("#id_counterparty").send_keys(BUYER.username)
    seller.find("#id_amount").send_keys("12500.00")
    seller.find("#id_description").send_keys("Valkyrie Helm, Roblox limited")
    seller.shot("new-deal")
    seller.find("#create-deal").click()
    # the click returns before the redirect has always arrived, and the deal page may first say "Updating…"
    seller.wait_until(lambda: not seller.driver.current_url.endswith("/deals/new"))
    seller.wait_for_state("AWAIT_ACCEPTANCE")
    seller.shot("deal-created")
    assert not seller.finds("#action-accept")  # the creator does not accept their own deal

    buyer.open("/deals/")
    buyer.driver.find_element("partial link text", "Valkyrie Helm").click()
    buyer.shot("deal-to-accept")
    buyer.find("#action-accept").click()
    buyer.wait_for_state("AWAIT_FUNDS")
    buyer.shot("deal-accepted")

    buyer.find("#action-pay").click()
    address = buyer.wait_for("#deposit-address").text.strip()
    deadline_and_amount = buyer.find("main").text
    buyer.shot("deposit")
    assert "12500.00" in deadline_and_amount and "Base" in deadline_and_amount
    assert address.startswith("0x") and len(address) == 42
    assert buyer.finds("main svg")  # the address as a QR code, drawn by this server
    assert not seller.finds("#action-pay")
