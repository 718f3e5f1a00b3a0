"""The admin console in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium):
sign in, read the overview's figures and compare them with ``admin.usageByDateRange`` for the same range, open the
most expensive conversation and find its calls, create a budget and see it listed, export a CSV and compare it with
the procedure's output, sign out. A screenshot of each page goes to ``test-artifacts/console/``.

The application runs in this test's event loop (``serve_app``), so every blocking Selenium call runs in a thread.
Selenium is pointed at ``/usr/bin/chromedriver`` (or ``CHROMEDRIVER``), so Selenium Manager never downloads a
browser. Without Chromium the test is skipped, except with ``TOLLBOOTH_REQUIRE_CHROMIUM=1`` (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from schemas.admin import ConversationCostInput, UsageByDateRangeInput
from schemas.budgets import ListBudgetsInput
from schemas.chat import SendMessageInput
from schemas.validation import local_midnight
from server.admin.reprice import RepriceFilters, reprice
from server.llm.pricing import PriceCatalogue
from server.users import NewUser, create_user
from tests.conftest import ROOT, ServedApp, app_database
from tollbooth_client import TollboothClient

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts" / "console"
TIME_ZONE = "Europe/Berlin"

T = TypeVar("T")

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("TOLLBOOTH_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"CI must run the console's browser test: install chromium and chromium-driver ({CHROMIUM})")
    pytest.skip(f"no Chromium at {CHROMIUM} or no chromedriver at {CHROMEDRIVER}", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (only with a browser to drive)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def downloads() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tollbooth-console-downloads-") as directory:
        yield Path(directory)


@pytest.fixture
async def driver(downloads: Path) -> AsyncIterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="tollbooth-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    browser = await asyncio.to_thread(webdriver.Chrome, options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield browser
    finally:
        await asyncio.to_thread(browser.quit)
        shutil.rmtree(profile, ignore_errors=True)


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(function, *args)


def _screenshot(browser: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(1000, int(height)), 6000))
    assert browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    browser.set_window_size(1400, 1000)


def _wait_for_path(browser: WebDriver, path: str, seconds: float = 10.0) -> None:
    """Wait until the browser shows ``path`` (a click returns before the navigation it starts has finished)."""
    WebDriverWait(browser, seconds).until(lambda b: urlsplit(b.current_url).path == path)
    WebDriverWait(browser, seconds).until(lambda b: b.execute_script("return document.readyState") == "complete")


def _follow(browser: WebDriver, by: str, value: str) -> None:
    """Click what leads to another page, and wait until that page has loaded."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(by, value).click()
    WebDriverWait(browser, 10).until(staleness_of(old))
    WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.readyState") == "complete")


def _text(browser: WebDriver, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text).strip()


def _wait_for_file(directory: Path, name: str, seconds: float = 15.0) -> Path:
    deadline = time.monotonic() + seconds
    path = directory / name
    while time.monotonic() < deadline:
        if path.exists() and not any(directory.glob("*.crdownload")):
            return path
        time.sleep(0.05)
    raise AssertionError(f"no {name} downloaded into {directory}: {list(directory.iterdir())}")


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A procedure's JSON object as the CSV spells it: nested fields as ``a.b``, null as empty, lists as JSON."""
    cells: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            cells.update(_flatten(item, f"{prefix}{key}."))
        elif item is None:
            cells[prefix + key] = ""
        elif isinstance(item, bool):
            cells[prefix + key] = "true" if item else "false"
        elif isinstance(item, list):
            cells[prefix + key] = json.dumps(item, separators=(",", ":"))
        else:
            cells[prefix + key] = str(item)
    return cells


async def _spend(client: TollboothClient) -> None:
    """Calls in two conversations on three models, so that the pages have something to show."""
    first = await client.chat.send_message(SendMessageInput(message="Explain tokens " * 40, model="gpt-4o"))
    await client.chat.send_message(
        SendMessageInput(message="And caching?", conversation_id=first.conversation_id, model="claude-haiku-4-5")
    )
    await client.chat.send_message(
        SendMessageInput(message="Once more " * 80, conversation_id=first.conversation_id, model="gpt-4o")
    )
    await client.chat.send_message(SendMessageInput(message="Short", model="gpt-4o-mini"))


async def test_an_admin_reads_the_console_in_a_real_browser(
    driver: WebDriver, downloads: Path, app_server: ServedApp, client: TollboothClient, alice: NewUser
) -> None:
    root = await create_user("root", is_admin=True)
    await _spend(client)
    await reprice(app_database(), PriceCatalogue.load(None), RepriceFilters(), dry_run=True, reason="console check")
    url = app_server.url
    browser = driver

    # Sign in: the console sends an unsigned-in browser to the form, and back to the page asked for.
    await in_thread(browser.get, f"{url}/console/models")
    assert "/console/sign-in" in browser.current_url
    await in_thread(_screenshot, browser, "sign-in")

    def sign_in() -> None:
        browser.find_element(By.ID, "api-key").send_keys(root.api_key)
        browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        _wait_for_path(browser, "/console/models")

    await in_thread(sign_in)
    assert "gpt-4o" in _text(browser, "#table-models")
    await in_thread(_screenshot, browser, "models")

    # The overview, in another time zone through the range picker.
    def pick_time_zone() -> None:
        browser.get(f"{url}/console")
        field = browser.find_element(By.ID, "tz")
        field.clear()
        field.send_keys(TIME_ZONE)
        _follow(browser, By.CSS_SELECTOR, "#range button")

    await in_thread(pick_time_zone)
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["tz"] == [TIME_ZONE]
    start, end = date.fromisoformat(query["start"][0]), date.fromisoformat(query["end"][0])
    assert end - start == timedelta(days=7)
    await in_thread(_screenshot, browser, "overview")
    async with TollboothClient(url, api_key=root.api_key, batching=False) as admin:
        usage = await admin.admin.usage_by_date_range(
            UsageByDateRangeInput(start=start, end=end, granularity="day", time_zone=TIME_ZONE)
        )
        assert usage.overall.llm_calls == 4
        assert _text(browser, "#range-cost") == f"USD {usage.overall.cost_usd}"
        assert _text(browser, "#range-calls") == f"{usage.overall.llm_calls:,}"
        assert _text(browser, "#range-errors") == f"{usage.overall.error_calls:,}"
        assert _text(browser, "#range-unpriced") == f"{usage.overall.unpriced_calls:,}"
        assert _text(browser, "#range-tokens") == f"{usage.overall.tokens.total:,}"
        bars = browser.find_elements(By.CSS_SELECTOR, "svg.stacked g.bar")
        assert [bar.get_attribute("data-total") for bar in bars] == [str(b.cost_usd) for b in usage.buckets]
        assert "gpt-4o" in _text(browser, "ul.legend")
        await in_thread(_follow, browser, By.ID, "by-procedure")
        assert "chat.sendMessage" in _text(browser, "ul.legend")

        # The most expensive conversation, and every one of its calls.
        await in_thread(_follow, browser, By.LINK_TEXT, "Conversations")
        await in_thread(_screenshot, browser, "conversations")
        await in_thread(_follow, browser, By.CSS_SELECTOR, "#table-conversations tbody tr td a")
        conversation_id = uuid.UUID(urlsplit(browser.current_url).path.rsplit("/", 1)[1])
        cost = await admin.admin.get_conversation_cost(ConversationCostInput(conversation_id=conversation_id))
        assert cost.totals.llm_calls == 3
        shown = [
            row.get_attribute("data-call-id") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-call-id]")
        ]
        assert shown == [str(row.call_id) for row in cost.rows]
        assert _text(browser, "#total-cost") == f"USD {cost.totals.total_cost_usd}"
        calls_text = _text(browser, "#table-calls")
        for row in cost.rows:
            assert row.price_source is not None
            assert row.price_source in calls_text
            assert row.rates_usd_per_million_tokens is not None
            assert f"× {row.rates_usd_per_million_tokens.input}" in calls_text
        await in_thread(_screenshot, browser, "conversation")

        # A budget, created through the form and listed with its spend.
        def create_budget() -> None:
            _follow(browser, By.LINK_TEXT, "Budgets")
            Select(browser.find_element(By.ID, "budget-scope")).select_by_visible_text("user")
            browser.find_element(By.ID, "budget-subject").send_keys(str(alice.id))
            Select(browser.find_element(By.ID, "budget-period")).select_by_visible_text("month")
            browser.find_element(By.ID, "budget-limit").send_keys("12.5")
            _follow(browser, By.ID, "budget-save")
            _wait_for_path(browser, "/console/budgets")

        await in_thread(create_budget)
        listed = await admin.admin.list_budgets(ListBudgetsInput())
        [budget] = listed.budgets
        assert budget.subject_id == alice.id
        table = _text(browser, "#table-budgets")
        assert str(alice.id) in table
        assert "12.5" in table
        assert str(budget.spent_usd) in table
        await in_thread(_screenshot, browser, "budgets")
        await in_thread(_follow, browser, By.LINK_TEXT, "Overview")
        assert f"of {budget.limit_usd}" in _text(browser, f'[data-budget-id="{budget.budget_id}"]')
        await in_thread(_screenshot, browser, "overview-with-budget")

        # Users, procedures, alerts and reprice runs render.
        for page in ("Users", "Procedures", "Alerts", "Reprice runs"):
            await in_thread(_follow, browser, By.LINK_TEXT, page)
            assert _text(browser, "h1")
            await in_thread(_screenshot, browser, page.lower().replace(" ", "-"))
        assert "console check" in _text(browser, "#table-runs")
        assert "completed (dry run)" in _text(browser, "#table-runs")

        # A CSV export, downloaded by the browser, equals the procedure's rows.
        await in_thread(_follow, browser, By.LINK_TEXT, "Models")
        await in_thread(browser.find_element(By.ID, "csv-models").click)
        exported = await in_thread(_wait_for_file, downloads, "models.csv")
        rows = list(csv.DictReader(io.StringIO(exported.read_text())))
        window = {
            "start": local_midnight(start, TIME_ZONE).isoformat(),
            "end": local_midnight(end, TIME_ZONE).isoformat(),
        }
        async with httpx.AsyncClient(base_url=url) as http:
            answer = await http.get(
                "/trpc/admin.usageByModel",
                params={"input": json.dumps(window)},
                headers={"Authorization": f"Bearer {root.api_key}"},
            )
        models = answer.json()["result"]["data"]["models"]
        assert len(models) == 3
        assert rows == [_flatten(model) for model in models]

    # Sign out: back to the form, and the console is closed.
    await in_thread(_follow, browser, By.ID, "sign-out")
    assert urlsplit(browser.current_url).path == "/console/sign-in"
    await in_thread(browser.get, f"{url}/console")
    assert "/console/sign-in" in browser.current_url
