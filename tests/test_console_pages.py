"""The console's pages over real HTTP: every table's CSV export is exactly the rows its admin procedure returns, tables
sort and page, the budget forms go through the budget service, and bad parameters get an error page."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.chat import SendMessageInput
from server.users import NewUser, create_user
from tests.conftest import ServedApp, fetch_rows
from tollbooth_client import TollboothClient

UNKNOWN = "6f1c8a56-52b4-4c8f-9d0a-3f0e8c1d2b7a"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A procedure's JSON object as the CSV spells it: nested fields as ``a.b``, null as empty, lists as JSON."""
    cells: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            cells.update(flatten(item, f"{prefix}{key}."))
        elif item is None:
            cells[prefix + key] = ""
        elif isinstance(item, bool):
            cells[prefix + key] = "true" if item else "false"
        elif isinstance(item, list):
            cells[prefix + key] = json.dumps(item, separators=(",", ":"))
        else:
            cells[prefix + key] = str(item)
    return cells


@pytest.fixture
async def root(db: None) -> NewUser:
    return await create_user("root", is_admin=True)


@pytest.fixture
async def console(app_server: ServedApp, root: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    """Signed in as ``root``, from the console's own pages (same-origin requests)."""
    async with httpx.AsyncClient(base_url=app_server.url, headers={"Sec-Fetch-Site": "same-origin"}) as http:
        signed = await http.post("/console/sign-in", data={"api_key": root.api_key})
        assert signed.status_code == 303
        yield http


@pytest.fixture
async def spent(client: TollboothClient) -> str:
    """Calls in two conversations; returns the id of the more expensive one."""
    first = await client.chat.send_message(SendMessageInput(message="Tell me " * 50, model="gpt-4o"))
    await client.chat.send_message(
        SendMessageInput(message="More", conversation_id=first.conversation_id, model="claude-haiku-4-5")
    )
    await client.chat.send_message(SendMessageInput(message="Hi", model="gpt-4o-mini"))
    return str(first.conversation_id)


async def procedure(http: httpx.AsyncClient, root: NewUser, path: str, data: dict[str, Any]) -> Any:
    answer = await http.get(
        f"/trpc/{path}", params={"input": json.dumps(data)}, headers={"Authorization": f"Bearer {root.api_key}"}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]["data"]


async def exported(http: httpx.AsyncClient, path: str, table: str, **params: str) -> list[dict[str, str]]:
    response = await http.get(path, params={**params, "export": table})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == f'attachment; filename="{table}.csv"'
    return list(csv.DictReader(io.StringIO(response.text)))


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


async def test_every_export_is_the_rows_of_its_procedure(
    console: httpx.AsyncClient, root: NewUser, spent: str, alice: NewUser
) -> None:
    end = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    start = (datetime.now(UTC).date() - timedelta(days=6)).isoformat()
    window = {"start": start, "end": end, "tz": "UTC"}
    times = {"start": f"{start}T00:00:00Z", "end": f"{end}T00:00:00Z"}
    await console.post(
        "/console/budgets",
        data={
            "csrf_token": CSRF.findall((await console.get("/console/budgets")).text)[0],
            "scope": "user",
            "subject_id": str(alice.id),
            "period": "day",
            "limit_usd": "0.000001",
            "hard": "",
            "alert_thresholds": "0.5",
        },
    )

    usage = await procedure(console, root, "admin.usageByDateRange", {**times, "granularity": "day"})
    assert await exported(console, "/console", "buckets", **window) == [flatten(b) for b in usage["buckets"]]
    top = await procedure(console, root, "admin.topConversationsByCost", {**times, "limit": 100})
    assert len(top["conversations"]) == 2
    rows = await exported(console, "/console/conversations", "conversations", **window)
    assert rows == [flatten(c) for c in top["conversations"]]
    users = await procedure(console, root, "admin.usageByUser", {**times, "limit": 500})
    assert await exported(console, "/console/users", "users", **window) == [flatten(u) for u in users["users"]]
    models = await procedure(console, root, "admin.usageByModel", times)
    assert await exported(console, "/console/models", "models", **window) == [flatten(m) for m in models["models"]]
    procedures = await procedure(console, root, "admin.usageByProcedure", times)
    rows = await exported(console, "/console/procedures", "procedures", **window)
    assert rows == [flatten(p) for p in procedures["procedures"]]
    budgets = await procedure(console, root, "admin.listBudgets", {})
    assert len(budgets["budgets"]) == 1
    assert await exported(console, "/console/budgets", "budgets") == [flatten(b) for b in budgets["budgets"]]
    alerts = await procedure(console, root, "admin.listAlerts", {"limit": 100})
    assert await exported(console, "/console/alerts", "alerts") == [flatten(a) for a in alerts["alerts"]]
    runs = await procedure(console, root, "admin.repriceRuns", {"limit": 100})
    assert await exported(console, "/console/reprice-runs", "runs") == [flatten(r) for r in runs["runs"]]
    cost = await procedure(console, root, "admin.getConversationCost", {"conversationId": spent, "limit": 100})
    page = f"/console/conversations/{spent}"
    assert await exported(console, page, "calls") == [flatten(r) for r in cost["rows"]]
    assert await exported(console, page, "models") == [flatten(m) for m in cost["modelDistribution"]]
    assert await exported(console, page, "procedures") == [flatten(p) for p in cost["byProcedure"]]


async def test_a_conversation_page_explains_each_call(console: httpx.AsyncClient, root: NewUser, spent: str) -> None:
    page = await console.get(f"/console/conversations/{spent}")
    assert page.status_code == 200
    cost = await procedure(console, root, "admin.getConversationCost", {"conversationId": spent})
    assert f"USD {cost['totals']['totalCostUsd']}" in page.text
    for row in cost["rows"]:
        assert f'data-call-id="{row["callId"]}"' in page.text
        assert row["priceSource"] in page.text
        assert f"× {row['ratesUsdPerMillionTokens']['input']}" in page.text
        assert f"= {row['costsUsd']['input']}" in page.text
    found = await console.get("/console/conversations", params={"conversationId": spent, "tz": "Asia/Tokyo"})
    assert found.status_code == 303
    assert found.headers["location"].startswith(f"/console/conversations/{spent}?")


async def test_tables_sort_and_page(console: httpx.AsyncClient, spent: str) -> None:
    today = datetime.now(UTC).date()
    window = {"start": (today - timedelta(days=59)).isoformat(), "end": (today + timedelta(days=1)).isoformat()}
    first = await console.get("/console", params=window)
    assert "Page 1 of 2 (60 rows)" in first.text
    assert (today - timedelta(days=59)).isoformat() in first.text
    second = await console.get("/console", params={**window, "page_buckets": "2"})
    assert "Page 2 of 2 (60 rows)" in second.text
    assert today.isoformat() in second.text
    by_cost = await console.get("/console", params={**window, "sort_buckets": "-cost"})
    table = by_cost.text[by_cost.text.index('data-table="buckets"') :]
    first_day = re.search(r"<tbody>\s*<tr><td>([0-9-]+)</td>", table)
    assert first_day is not None
    assert first_day[1] == today.isoformat()
    assert "cost</a> ▼" in table or "Cost (USD)</a> ▼" in table
    ascending = await console.get("/console/models", params={**window, "sort_models": "model"})
    names = re.findall(r"<td>(gpt-4o-mini|gpt-4o|claude-haiku-4-5)</td>", ascending.text)
    assert names == sorted(names)


async def test_budgets_are_created_changed_and_deleted_through_the_forms(
    console: httpx.AsyncClient, root: NewUser, alice: NewUser
) -> None:
    token = CSRF.findall((await console.get("/console/budgets")).text)[0]
    form = {"csrf_token": token, "scope": "user", "subject_id": str(alice.id), "period": "week", "hard": "on"}
    bad = await console.post("/console/budgets", data={**form, "limit_usd": "ten", "alert_thresholds": "0.5"})
    assert bad.status_code == 400
    assert "amount of USD" in bad.text
    unknown = {**form, "subject_id": "00000000-0000-0000-0000-000000000001", "limit_usd": "1"}
    missing = await console.post("/console/budgets", data=unknown)
    assert missing.status_code == 400
    assert "00000000-0000-0000-0000-000000000001" in missing.text
    assert await fetch_rows("SELECT id FROM budgets") == []

    created = await console.post("/console/budgets", data={**form, "limit_usd": "2.50", "alert_thresholds": "0.5, 1"})
    assert created.status_code == 303
    [budget] = (await procedure(console, root, "admin.listBudgets", {}))["budgets"]
    assert (budget["limitUsd"], budget["hard"], budget["alertThresholds"]) == ("2.5", True, [0.5, 1.0])
    overview = await console.get("/console")
    assert overview.status_code == 200
    assert f'data-budget-id="{budget["budgetId"]}"' in overview.text
    assert "USD 0 of 2.5" in overview.text
    editing = await console.get("/console/budgets", params={"edit": budget["budgetId"]})
    assert 'value="2.5"' in editing.text
    changed = await console.post(
        "/console/budgets", data={**form, "limit_usd": "7", "hard": "", "alert_thresholds": ""}
    )
    assert changed.status_code == 303
    [budget] = (await procedure(console, root, "admin.listBudgets", {}))["budgets"]
    assert (budget["limitUsd"], budget["hard"], budget["alertThresholds"]) == ("7", False, [])
    listed = await console.get("/console/budgets")
    assert str(alice.id) in listed.text
    deleted = await console.post(f"/console/budgets/{budget['budgetId']}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert (await procedure(console, root, "admin.listBudgets", {}))["budgets"] == []
    again = await console.post(f"/console/budgets/{budget['budgetId']}/delete", data={"csrf_token": token})
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("/console", {"tz": "Mars/Olympus_Mons"}, 400, "IANA time zone"),
        ("/console/models", {"start": "2026-13-01"}, 400, "must be a date"),
        ("/console/users", {"start": "2026-11-10", "end": "2026-11-01"}, 400, "start before it ends"),
        ("/console/models", {"export": "nothing"}, 400, "no table named"),
        (
            "/console/conversations/6f1c8a56-52b4-4c8f-9d0a-3f0e8c1d2b7a",
            {},
            404,
            "6f1c8a56-52b4-4c8f-9d0a-3f0e8c1d2b7a",
        ),
        ("/console/conversations", {"conversationId": "nope"}, 400, "not a conversation id"),
    ],
)
async def test_bad_parameters_get_an_error_page(
    console: httpx.AsyncClient, path: str, params: dict[str, str], status: int, says: str
) -> None:
    response = await console.get(path, params=params)
    assert response.status_code == status
    assert says in response.text
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("formula", ['=HYPERLINK("https://attacker.example")', '-1+HYPERLINK("https://a.example")'])
async def test_a_title_a_spreadsheet_would_run_is_exported_as_text(
    console: httpx.AsyncClient, client: TollboothClient, formula: str
) -> None:
    sent = await client.chat.send_message(SendMessageInput(message=formula))
    rows = await exported(console, "/console/conversations", "conversations")
    [row] = rows
    assert row["conversationId"] == str(sent.conversation_id)
    assert row["title"] == "'" + formula
