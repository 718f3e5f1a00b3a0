"""``admin.cacheStats`` and the dashboard views over the response cache and idempotency keys
(``server/admin/queries.py``, the migration ``2026-11-29T15:30``; README, "Monitoring: spend in SQL")."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from server.database import Database
from server.llm.response_cache import ResponseCache
from server.simulator import RunningSimulator
from server.users import NewUser, create_user
from tests.conftest import ServedApp, app_database, fetch_rows

EMAIL: dict[str, Any] = {"email": {"subject": "Q3", "body": "Please send the Q3 report to finance by Friday."}}
TODAY = datetime.datetime.now(datetime.UTC).date()


@pytest.fixture
async def root(db: None) -> NewUser:
    return await create_user("root", is_admin=True)


@pytest.fixture
async def http(app_server: ServedApp, alice: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {alice.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers, timeout=60) as client:
        yield client


@pytest.fixture
async def admin_http(app_server: ServedApp, root: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {root.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers, timeout=60) as client:
        yield client


async def _call(http: httpx.AsyncClient, procedure: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/{procedure}", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["result"]["data"]
    return data


async def _stats(http: httpx.AsyncClient, **input: Any) -> dict[str, Any]:
    params = {"input": json.dumps(input)} if input else None
    response = await http.get("/admin.cacheStats", params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["result"]["data"]
    return data


def _money(figures: dict[str, Any]) -> dict[str, Any]:
    """``savedUsd`` as a Decimal, to compare amounts rather than spellings."""
    saved = figures["savedUsd"]
    return {**figures, "savedUsd": None if saved is None else Decimal(saved)}


def _use(body: dict[str, Any], mode: str = "use") -> dict[str, Any]:
    return {**body, "cache": {"mode": mode}}


async def test_hits_misses_ratio_and_savings_overall_by_procedure_and_by_day(
    http: httpx.AsyncClient, admin_http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    empty = await _stats(admin_http)
    assert empty["entries"] == 0
    assert empty["combined"] == {
        "hits": 0,
        "misses": 0,
        "hitRatio": None,
        "savedUsd": "0",
        "idempotentReplays": 0,
        "deduplicatedRequests": 0,
    }
    assert (empty["byProcedure"], empty["byDay"]) == ([], [])

    first = await _call(http, "chat.summarizeEmail", _use({**EMAIL, "model": "gpt-4o-mini"}))
    for _ in range(2):
        await _call(http, "chat.summarizeEmail", _use({**EMAIL, "model": "gpt-4o-mini"}))
    await _call(http, "chat.sendMessage", _use({"message": "Hi", "model": "gpt-4o-mini"}))
    await _call(http, "chat.sendMessage", _use({"message": "Hi", "model": "gpt-4o-mini"}, "refresh"))
    await _call(http, "chat.sendMessage", {"message": "No cache", "model": "gpt-4o-mini"})
    await _call(http, "chat.sendMessage", _use({"message": "Bypassed", "model": "gpt-4o-mini"}, "bypass"))
    assert len(sim.state.requests) == 5

    stats = await _stats(admin_http)
    assert stats["entries"] == 2
    saved = Decimal(first["costUsd"]) * 2
    summaries = {
        "hits": 2,
        "misses": 1,
        "hitRatio": 2 / 3,
        "savedUsd": saved,
        "idempotentReplays": 0,
        "deduplicatedRequests": 0,
    }
    messages = {
        "hits": 0,
        "misses": 1,
        "hitRatio": 0.0,
        "savedUsd": Decimal(0),
        "idempotentReplays": 0,
        "deduplicatedRequests": 0,
    }
    overall = {
        "hits": 2,
        "misses": 2,
        "hitRatio": 0.5,
        "savedUsd": saved,
        "idempotentReplays": 0,
        "deduplicatedRequests": 0,
    }
    assert _money(stats["combined"]) == overall
    assert [_money(row) for row in stats["byProcedure"]] == [
        {"procedure": "chat.summarizeEmail", **summaries},
        {"procedure": "chat.sendMessage", **messages},
    ]
    assert [_money(row) for row in stats["byDay"]] == [{"day": TODAY.isoformat(), **overall}]

    narrowed = await _stats(admin_http, procedure="chat.sendMessage")
    assert narrowed["entries"] == 1
    assert _money(narrowed["combined"]) == messages
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    future = await _stats(admin_http, start=later.isoformat())
    assert future["combined"]["hits"] == 0
    assert future["entries"] == 2, "entries are those live now, whatever the window"


async def test_a_miss_is_labelled_on_its_usage_row_and_other_calls_are_not(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    await _call(http, "chat.sendMessage", _use({"message": "Hi", "model": "gpt-4o-mini"}))
    await _call(http, "chat.sendMessage", _use({"message": "Hi", "model": "gpt-4o-mini"}, "refresh"))
    await _call(http, "chat.sendMessage", _use({"message": "Hi", "model": "gpt-4o-mini"}))
    await _call(http, "chat.sendMessage", {"message": "Plain", "model": "gpt-4o-mini"})
    rows = await fetch_rows("SELECT status, metadata ->> 'cache' AS cache FROM ai_usage_logs ORDER BY created_at")
    assert rows == [
        {"status": "ok", "cache": "miss"},
        {"status": "ok", "cache": "refresh"},
        {"status": "cache_hit", "cache": None},
        {"status": "ok", "cache": None},
    ]


async def test_idempotent_replays_are_counted_per_day_and_procedure(
    http: httpx.AsyncClient, admin_http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    body = {"message": "Once", "model": "gpt-4o-mini", "idempotencyKey": "k-1"}
    for _ in range(3):
        await _call(http, "chat.sendMessage", body)
    await _call(http, "chat.sendMessage", {"message": "No key", "model": "gpt-4o-mini"})
    assert len(sim.state.requests) == 2
    stats = await _stats(admin_http)
    assert stats["combined"]["idempotentReplays"] == 2
    assert stats["combined"]["hitRatio"] is None
    assert stats["byProcedure"] == [
        {
            "procedure": "chat.sendMessage",
            "hits": 0,
            "misses": 0,
            "hitRatio": None,
            "savedUsd": "0",
            "idempotentReplays": 2,
            "deduplicatedRequests": 0,
        }
    ]
    assert stats["byDay"][0]["day"] == TODAY.isoformat()
    views = await fetch_rows("SELECT day, procedure, replays FROM idempotent_replays_daily")
    assert views == [{"day": TODAY, "procedure": "chat.sendMessage", "replays": 2}]
    tomorrow = datetime.datetime.combine(TODAY + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    assert (await _stats(admin_http, start=tomorrow.isoformat()))["combined"]["idempotentReplays"] == 0


async def test_cache_stats_is_for_admins(http: httpx.AsyncClient) -> None:
    response = await http.get("/admin.cacheStats")
    assert response.status_code == 403


async def test_the_dashboard_views_count_growth_replacements_expiry_and_hit_ratio(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    await _call(http, "chat.summarizeEmail", {**EMAIL, "cache": {"mode": "use", "ttlSeconds": 1}})
    await _call(http, "chat.summarizeEmail", _use(EMAIL))
    await _call(http, "chat.summarizeEmail", _use(EMAIL, "refresh"))
    await _call(http, "chat.sendMessage", _use({"message": "Hi", "model": "gpt-4o-mini"}))
    database: Database = app_database()
    growth = await fetch_rows(
        "SELECT day, procedure, entries_created, entries_replaced, entries_expired, net_growth "
        "FROM response_cache_growth_daily ORDER BY procedure"
    )
    assert growth == [
        {
            "day": TODAY,
            "procedure": "chat.sendMessage",
            "entries_created": 1,
            "entries_replaced": 0,
            "entries_expired": 0,
            "net_growth": 1,
        },
        {
            "day": TODAY,
            "procedure": "chat.summarizeEmail",
            "entries_created": 1,
            "entries_replaced": 1,
            "entries_expired": 0,
            "net_growth": 1,
        },
    ]
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    assert await ResponseCache(database).prune(now=later) == 2
    expired = await fetch_rows(
        "SELECT sum(entries_expired)::int AS n, sum(net_growth)::int AS net FROM response_cache_growth_daily"
    )
    assert expired == [{"n": 2, "net": 0}]

    ratio = await fetch_rows(
        "SELECT day, procedure, hits, misses, hit_ratio, saved_usd > 0 AS saved FROM cache_hit_ratio_daily "
        "ORDER BY procedure"
    )
    assert ratio == [
        {"day": TODAY, "procedure": "chat.sendMessage", "hits": 0, "misses": 1, "hit_ratio": 0, "saved": False},
        {
            "day": TODAY,
            "procedure": "chat.summarizeEmail",
            "hits": 1,
            "misses": 1,
            "hit_ratio": 0.5,
            "saved": True,
        },
    ]
    index = await fetch_rows("SELECT indexdef FROM pg_indexes WHERE indexname = 'ai_usage_logs_cache_lookups'")
    assert "cache_hit" in index[0]["indexdef"]
