"""The response cache: an answer asked for again is replayed at no cost, per user, and only a valid one is kept
(``server/llm/response_cache.py``, ``LLMCore.invoke``; README, "Response cache")."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from schemas.cache import CacheOptions
from schemas.chat import Email, StreamMessageDelta, StreamMessageDone, StreamMessageInput, SummarizeEmailInput
from server.admin import check_totals
from server.database import Database
from server.llm.response_cache import ResponseCache
from server.simulator import RunningSimulator, ScriptedResponse
from server.users import NewUser, create_user
from tests.conftest import MakeServices, ServedApp, app_database, fetch_rows
from tollbooth_client import TollboothClient, TRPCClientError

EMAIL: dict[str, Any] = {"email": {"subject": "Q3", "body": "Please send the Q3 report to finance by Friday."}}


@pytest.fixture
async def bob(db: None) -> NewUser:
    return await create_user("bob")


@pytest.fixture
async def http(app_server: ServedApp, alice: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {alice.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers, timeout=60) as client:
        yield client


async def _call(http: httpx.AsyncClient, procedure: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/{procedure}", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["result"]["data"]
    return data


def _use(body: dict[str, Any], mode: str = "use") -> dict[str, Any]:
    return {**body, "cache": {"mode": mode}}


async def test_two_identical_summaries_call_the_provider_once_and_the_second_costs_nothing(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    opened = await _call(http, "chat.sendMessage", {"message": "Hello", "model": "gpt-4o-mini"})
    conversation_id = opened["conversationId"]
    ask = _use({**EMAIL, "model": "gpt-4o-mini", "conversationId": conversation_id})

    first = await _call(http, "chat.summarizeEmail", ask)
    second = await _call(http, "chat.summarizeEmail", ask)

    assert len(sim.state.requests) == 2, "the second summary was answered by the cache"
    assert (first["fromCache"], first["cacheAgeSeconds"], first["savedUsd"]) == (False, None, None)
    assert second["fromCache"] is True
    assert second["cacheAgeSeconds"] >= 0
    assert second["costUsd"] == "0"
    assert Decimal(first["costUsd"]) > 0
    assert second["savedUsd"] == first["costUsd"]
    assert (second["summary"], second["keyPoints"], second["actionItems"]) == (
        first["summary"],
        first["keyPoints"],
        first["actionItems"],
    )
    totals = second["conversation"]
    assert totals["llmCalls"] == opened["conversation"]["llmCalls"] + 2
    assert Decimal(totals["totalCostUsd"]) == Decimal(opened["costUsd"]) + Decimal(first["costUsd"])
    assert totals["totalTokensUsed"] == first["conversation"]["totalTokensUsed"]

    rows = await fetch_rows(
        "SELECT call_id, status, estimated_cost_usd, saved_usd, cached_call_id, total_tokens FROM ai_usage_logs "
        "WHERE procedure = 'chat.summarizeEmail' ORDER BY created_at"
    )
    assert [row["status"] for row in rows] == ["ok", "cache_hit"]
    assert rows[1]["cached_call_id"] == rows[0]["call_id"]
    assert (rows[1]["estimated_cost_usd"], rows[1]["total_tokens"]) == (0, 0)
    assert rows[1]["saved_usd"] == rows[0]["estimated_cost_usd"]
    assert rows[0]["saved_usd"] is None
    report = await check_totals(app_database())
    assert report.consistent, report


async def test_a_hit_in_a_conversation_stores_the_messages_like_a_reply(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    first = await _call(http, "chat.sendMessage", _use({"message": "Hello", "model": "gpt-4o-mini"}))
    second = await _call(http, "chat.sendMessage", _use({"message": "Hello", "model": "gpt-4o-mini"}))
    assert len(sim.state.requests) == 1
    assert second["fromCache"] is True
    assert second["reply"] == first["reply"]
    assert second["conversationId"] != first["conversationId"]
    messages = await fetch_rows(
        "SELECT role, content FROM messages WHERE conversation = $1 ORDER BY created_at",
        uuid.UUID(second["conversationId"]),
    )
    assert messages == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first["reply"]}]
    assert second["conversation"]["llmCalls"] == 1
    assert second["conversation"]["totalCostUsd"] == "0"
    assert (await check_totals(app_database())).consistent


VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("chat.sendMessage", {"message": "Hi", "model": "gpt-4o-mini"}, {"model": "gpt-4o"}),
    ("chat.sendMessage", {"message": "Hi", "model": "gpt-4o-mini"}, {"systemPrompt": "Be brief."}),
    ("chat.sendMessage", {"message": "Hi", "model": "gpt-4o-mini"}, {"temperature": 0.5}),
    ("chat.sendMessage", {"message": "Hi", "model": "gpt-4o-mini"}, {"maxTokens": 64}),
    ("chat.sendMessage", {"message": "Hi", "model": "gpt-4o-mini"}, {"message": "Hi!"}),
    ("chat.executeAction", {"action": "extract_tasks", "text": "Call Ann"}, {"action": "classify_intent"}),
    ("chat.summarizeEmail", EMAIL, {"maxWords": 50}),
]


@pytest.mark.parametrize(
    ("procedure", "base", "change"),
    VARIANTS,
    ids=["model", "system-prompt", "temperature", "max-tokens", "message", "action", "max-words"],
)
async def test_changing_any_field_that_changes_the_answer_misses(
    http: httpx.AsyncClient, sim: RunningSimulator, procedure: str, base: dict[str, Any], change: dict[str, Any]
) -> None:
    await _call(http, procedure, _use(base))
    changed = await _call(http, procedure, _use({**base, **change}))
    assert changed["fromCache"] is False
    assert len(sim.state.requests) == 2
    again = await _call(http, procedure, _use(base))
    assert again["fromCache"] is True
    assert len(sim.state.requests) == 2


async def test_a_new_schema_version_misses(
    http: httpx.AsyncClient, sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _call(http, "chat.summarizeEmail", _use(EMAIL))
    monkeypatch.setattr("server.chat.service.SCHEMA_VERSION", 2)
    bumped = await _call(http, "chat.summarizeEmail", _use(EMAIL))
    assert bumped["fromCache"] is False
    assert len(sim.state.requests) == 2


async def test_one_users_answer_never_answers_another(
    http: httpx.AsyncClient, app_server: ServedApp, sim: RunningSimulator, bob: NewUser
) -> None:
    await _call(http, "chat.summarizeEmail", _use(EMAIL))
    headers = {"authorization": f"Bearer {bob.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers, timeout=60) as as_bob:
        theirs = await _call(as_bob, "chat.summarizeEmail", _use(EMAIL))
    assert theirs["fromCache"] is False
    assert len(sim.state.requests) == 2


async def test_fifty_concurrent_identical_misses_make_one_provider_call(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=300))
    outputs = await asyncio.gather(
        *(_call(http, "chat.summarizeEmail", _use({**EMAIL, "model": "gpt-4o-mini"})) for _ in range(50))
    )
    assert len(sim.state.requests) == 1
    assert sorted(output["fromCache"] for output in outputs) == [False] + [True] * 49
    assert len({output["summary"] for output in outputs}) == 1
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs WHERE status = 'cache_hit'")) == 49
    assert (await check_totals(app_database())).consistent


async def test_refresh_calls_the_provider_and_replaces_the_entry(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    body = {"message": "Tell me a fact", "model": "gpt-4o-mini"}
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="old fact"))
    await _call(http, "chat.sendMessage", _use(body))
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="new fact"))
    refreshed = await _call(http, "chat.sendMessage", _use(body, "refresh"))
    assert (refreshed["fromCache"], refreshed["reply"]) == (False, "new fact")
    assert len(sim.state.requests) == 2
    hit = await _call(http, "chat.sendMessage", _use(body))
    assert (hit["fromCache"], hit["reply"]) == (True, "new fact")
    assert len(await fetch_rows("SELECT 1 FROM response_cache")) == 1


async def test_bypass_neither_reads_nor_writes_the_cache(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    body = {"message": "Tell me a fact", "model": "gpt-4o-mini"}
    await _call(http, "chat.sendMessage", _use(body, "bypass"))
    assert await fetch_rows("SELECT 1 FROM response_cache") == []
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="kept"))
    await _call(http, "chat.sendMessage", _use(body))
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="not kept"))
    bypassed = await _call(http, "chat.sendMessage", _use(body, "bypass"))
    assert (bypassed["fromCache"], bypassed["reply"]) == (False, "not kept")
    hit = await _call(http, "chat.sendMessage", _use(body))
    assert (hit["fromCache"], hit["reply"]) == (True, "kept")
    assert len(sim.state.requests) == 3


async def test_a_call_without_cache_neither_reads_nor_writes_it(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    await _call(http, "chat.summarizeEmail", EMAIL)
    plain = await _call(http, "chat.summarizeEmail", EMAIL)
    assert (plain["fromCache"], plain["savedUsd"]) == (False, None)
    assert len(sim.state.requests) == 2
    assert await fetch_rows("SELECT 1 FROM response_cache") == []


async def test_an_invalid_structured_answer_is_never_stored(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="not JSON at all"))
    first = await _call(http, "chat.summarizeEmail", _use(EMAIL))
    assert first["llmCalls"] == 2, "asked again after the invalid answer"
    assert await fetch_rows("SELECT 1 FROM response_cache") == []
    again = await _call(http, "chat.summarizeEmail", _use(EMAIL))
    assert again["fromCache"] is False
    assert len(sim.state.requests) == 3


async def test_expired_entries_miss_and_are_pruned(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    await _call(http, "chat.summarizeEmail", {**EMAIL, "cache": {"mode": "use", "ttlSeconds": 1}})
    cache = ResponseCache(app_database())
    assert await cache.prune() == 0
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    assert await cache.prune(now=later) == 1
    assert await fetch_rows("SELECT 1 FROM response_cache") == []
    again = await _call(http, "chat.summarizeEmail", _use(EMAIL))
    assert again["fromCache"] is False


async def test_a_finished_stream_repeated_replays_its_reply_and_a_running_one_is_conflict(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    ask = StreamMessageInput(request_id=uuid.uuid4(), message="hi", model="gpt-4o-mini")
    events = [event async for event in client.chat.stream_message(ask)]
    done = events[-1]
    assert isinstance(done, StreamMessageDone)
    replayed = [event async for event in client.chat.stream_message(ask)]
    assert replayed == [StreamMessageDelta(text=done.reply), _replayed(done)]
    assert len(sim.state.requests) == 1

    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=500))
    running = StreamMessageInput(request_id=uuid.uuid4(), message="slow", model="gpt-4o-mini")
    first = asyncio.create_task(_drain(client, running))
    await asyncio.sleep(0.2)
    with pytest.raises(TRPCClientError) as raised:
        await _drain(client, running)
    assert raised.value.code == "CONFLICT"
    await first
    assert len(sim.state.requests) == 2


def _replayed(done: StreamMessageDone) -> StreamMessageDone:
    return msgspec.structs.replace(done, from_idempotent_cache=True)


async def _drain(client: TollboothClient, ask: StreamMessageInput) -> None:
    async for _ in client.chat.stream_message(ask):
        pass


async def test_a_call_without_cache_makes_no_extra_round_trip(
    make_services: MakeServices, alice: NewUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path: the claim and the recording transaction, nothing else; a hit replaces the claim and the provider
    call by one read, and a miss adds the read and the write of the entry."""
    services = make_services()
    statements: list[str] = []
    run = Database._run
    transaction = Database.transaction

    async def counted_run(self: Database, statement: Any) -> Any:
        statements.append("statement")
        return await run(self, statement)

    def counted_transaction(self: Database) -> Any:
        statements.append("transaction")
        return transaction(self)

    monkeypatch.setattr(Database, "_run", counted_run)
    monkeypatch.setattr(Database, "transaction", counted_transaction)
    ask = SummarizeEmailInput(email=Email(body="The meeting moves to 3pm."), model="gpt-4o-mini")
    await services.chat.summarize_email(alice.id, ask)
    plain = len(statements)
    assert plain == 2, statements
    statements.clear()
    cached = msgspec.structs.replace(ask, cache=CacheOptions(mode="use"))
    await services.chat.summarize_email(alice.id, cached)
    assert len(statements) == plain + 2, statements
    statements.clear()
    hit = await services.chat.summarize_email(alice.id, cached)
    assert hit.from_cache
    assert len(statements) == 2, statements
