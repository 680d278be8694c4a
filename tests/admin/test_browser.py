"""A dispute agent resolves a dispute in a real browser (headless Chromium) against a live server, and the
AuditLog records it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from apps.escrow.models import Escrow
from apps.gateway.mfa import enroll_totp
from apps.gateway.models import AuditLog
from tests.admin.conftest import PASSWORD
from tests.admin.test_mfa import fresh_code
from tests.gateway.support import settle

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed: apt-get install -y chromium chromium-driver (.ci/run does this)",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER or ""), options=options)
    driver.implicitly_wait(10)
    try:
        yield driver
    finally:
        driver.quit()


def test_an_agent_resolves_a_dispute_in_the_browser(live_server: Any, browser: Any, agent: Any, disputed: str) -> None:
    from selenium.webdriver.common.by import By

    enroll_totp(user=agent)
    browser.get(f"{live_server.url}/admin/login/?next=/admin/escrow/escrow/disputes/")
    browser.find_element(By.NAME, "username").send_keys(agent.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    # the admin requires a second factor: the agent's authenticator app would show this code
    browser.find_element(By.NAME, "otp_code").send_keys(fresh_code(agent))
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()

    # the queue, then the desk for our dispute
    browser.find_element(By.ID, "dispute-queue")
    browser.find_element(By.LINK_TEXT, disputed).click()
    assert "the item was a duplicate" in browser.find_element(By.ID, "statements").text
    assert browser.find_element(By.ID, "escrow-state").text == "DISPUTED"

    browser.find_element(By.CSS_SELECTOR, "input[name=outcome][value=refund]").click()
    browser.find_element(By.NAME, "reason").send_keys("seller admitted the item was never sent")
    browser.find_element(By.ID, "resolve-submit").click()

    assert "Resolved (refund)" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "seller admitted the item was never sent" in browser.find_element(By.ID, "audit").text
    settle()
    entry = AuditLog.objects.get()
    assert (entry.actor, entry.action, str(entry.escrow_id)) == (agent, "resolve_dispute", disputed)
    assert entry.detail["outcome"] == "refund"
    assert Escrow.objects.get(pk=disputed).state == "REFUNDED"
