"""`manage.py serve` as `make run` starts it: a production server (gunicorn) with DEBUG off serves the
admin's stylesheet and an offline Swagger UI, logs JSON lines, runs the bus worker beside it, and keeps a
bounded number of database connections under concurrent clients."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from tests.serving import CHROMEDRIVER, CHROMIUM, NO_CHROMIUM, chromium, log_lines, served, wait_for_log

pytestmark = pytest.mark.postgres_only  # the server is a second process on the test database

# The admin's header colour from django/contrib/admin/static/admin/css/base.css (--header-bg: #417690).
ADMIN_HEADER_BG = "rgba(65, 118, 144, 1)"


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


# The server's connections name themselves (libpq's PGAPPNAME), so other tests' leftovers on the same
# database are not counted as the server's.
SERVER_APP_NAME = f"escrow-serve-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def server(transactional_db: None) -> Any:
    with served(env={"DEBUG": "0", "PGAPPNAME": SERVER_APP_NAME}) as (base, proc):
        yield base, proc


def test_static_files_and_the_offline_docs_are_served_with_debug_off(server: Any) -> None:
    base, proc = server
    status, headers, body = get(f"{base}/static/admin/css/base.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert b"--header-bg" in body

    for page in ("/api/v1/docs", "/api/v1/redoc"):
        status, _, html = get(f"{base}{page}")
        assert status == 200
        sources = re.findall(rb'(?:src|href)="([^"]+)"', html)
        assert sources, page
        # Everything the page loads comes from this server: no CDN.
        assert all(s.startswith(b"/static/") for s in sources), (page, sources)
        for source in sources:
            assert get(f"{base}{source.decode()}")[0] == 200, source


def test_the_server_logs_json_lines_and_runs_the_bus_worker(server: Any) -> None:
    base, proc = server
    get(f"{base}/api/v1/health")
    started = wait_for_log(proc, "bus worker started")
    assert started["logger"] == "apps.outbox.worker"
    lines = log_lines(proc)
    assert {"gunicorn.error", "apps.gateway.access"} <= {line["logger"] for line in lines}
    request = next(line for line in lines if line["logger"] == "apps.gateway.access")
    assert request["route"] == "api/v1/health" and request["status"] == 200


def _connections_to_test_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [SERVER_APP_NAME],
        )
        return int(cursor.fetchone()[0])


def test_database_connections_stay_bounded_under_concurrent_clients(server: Any) -> None:
    """Twenty clients, 300 requests that each touch the database: the server holds at most its pool
    (DATABASE_POOL_MAX, default 10, shared by the request threads and the bus worker) plus the bus worker's
    LISTEN connection; without the pool, one per request thread (8) plus the bus worker's two."""
    base, _ = server

    def ready(_: int) -> tuple[int, bool]:
        try:
            return get(f"{base}/api/v1/ready")[0], False
        except urllib.error.HTTPError as refused:
            # Back-pressure, not failure: an exhausted pool (or a lagging bus) answers 503 with Retry-After.
            return refused.code, bool(refused.headers.get("Retry-After"))

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ready, range(300)))
    assert all(status == 200 or (status == 503 and retry_after) for status, retry_after in answers), answers
    assert any(status == 200 for status, _ in answers)
    pooled = "pool" in connection.settings_dict.get("OPTIONS", {})  # the server runs with the same settings
    assert 1 <= _connections_to_test_database() <= (10 + 1 if pooled else 8 + 2)


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_CHROMIUM)
def test_a_browser_sees_the_styled_admin_and_the_swagger_operations(server: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = server
    with chromium() as browser:
        browser.get(f"{base}/admin/login/")
        header = browser.find_element(By.ID, "header")
        # Computed style: the stylesheet was fetched and applied, not just linked.
        assert header.value_of_css_property("background-color") == ADMIN_HEADER_BG
        loaded = browser.execute_script(
            "return Array.from(document.styleSheets).filter(s => s.href && s.href.endsWith('/admin/css/base.css'))"
            ".map(s => s.cssRules.length)"
        )
        assert loaded and loaded[0] > 0

        browser.get(f"{base}/api/v1/docs")
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        paths = {
            e.get_attribute("data-path") or e.text
            for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        assert "/api/v1/escrows" in paths and "/api/v1/escrows/{escrow_id}/release" in paths, paths
