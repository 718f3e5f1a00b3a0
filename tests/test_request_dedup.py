"""Request-hash de-duplication: a procedure that declares it (``personas.generate``) answers an identical request of
the same user, sent without an idempotency key within ``DEDUP_WINDOW_SECONDS``, from the first one
(``server/rpc/idempotency.py``, ``dedup_call``; README, "Idempotency")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse
from server.users import NewUser, create_user
from tests.conftest import ServedApp, fetch_rows, serve_app, simulator_env, until_received
from tests.test_personas import body, text_script

MARKER_FALSE = b'"fromIdempotentCache":false'
MARKER_TRUE = b'"fromIdempotentCache":true'
BYPASS: dict[str, Any] = {"cache": {"mode": "bypass"}}
"""Without the persona-set cache, every request that runs calls the model: what is counted is de-duplication."""


@pytest.fixture
async def bob(db: None) -> NewUser:
    return await create_user("bob")


@pytest.fixture
async def window_seconds() -> str:
    return "300"


@pytest.fixture
async def served(sim: RunningSimulator, db: None, tmp_path: Path, window_seconds: str) -> AsyncIterator[ServedApp]:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), DEDUP_WINDOW_SECONDS=window_seconds))
    async with serve_app(settings) as app:
        yield app


def client_of(served: ServedApp, user: NewUser) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {user.api_key}"}
    return httpx.AsyncClient(base_url=f"{served.url}/trpc", headers=headers, timeout=60)


@pytest.fixture
async def http(served: ServedApp, alice: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(served, alice) as client:
        yield client


async def post(http: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await http.post("/personas.generate", json=payload)


async def counts() -> list[tuple[str, int, int]]:
    rows = await fetch_rows("SELECT procedure, replays, deduplicated FROM idempotent_replay_counts")
    return [(row["procedure"], row["replays"], row["deduplicated"]) for row in rows]


async def test_two_identical_requests_within_the_window_make_one_model_call(
    http: httpx.AsyncClient, sim: RunningSimulator, served: ServedApp, alice: NewUser
) -> None:
    sim.state.enqueue(text_script(3))
    first = await post(http, {**body(), **BYPASS})
    second = await post(http, {**body(), **BYPASS})

    assert first.status_code == second.status_code == 200
    assert len(sim.state.requests) == 1
    assert MARKER_FALSE in first.content
    assert MARKER_TRUE in second.content
    assert second.content.replace(MARKER_TRUE, MARKER_FALSE) == first.content, "the first answer, byte for byte"
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) == 1
    assert await counts() == [("personas.generate", 0, 1)]
    assert await fetch_rows("SELECT procedure, deduplicated FROM deduplicated_requests_daily") == [
        {"procedure": "personas.generate", "deduplicated": 1}
    ]
    assert await fetch_rows("SELECT 1 FROM idempotent_replays_daily") == []

    root = await create_user("root", is_admin=True)
    async with client_of(served, root) as admin:
        stats = (await admin.get("/admin.cacheStats")).json()["result"]["data"]
    assert (stats["combined"]["deduplicatedRequests"], stats["combined"]["idempotentReplays"]) == (1, 0)
    [by_procedure] = stats["byProcedure"]
    assert (by_procedure["procedure"], by_procedure["deduplicatedRequests"]) == ("personas.generate", 1)
    assert [day["deduplicatedRequests"] for day in stats["byDay"]] == [1]


async def test_a_field_sent_at_its_default_is_the_same_request(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(text_script(3))
    await post(http, {**body(), **BYPASS})
    repeat = await post(http, {**body(), **BYPASS, "leadEmail": None})
    assert MARKER_TRUE in repeat.content
    assert len(sim.state.requests) == 1


@pytest.mark.parametrize("window_seconds", ["0.2"])
async def test_after_the_window_the_same_request_runs_again(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(text_script(3), text_script(3))
    await post(http, {**body(), **BYPASS})
    await asyncio.sleep(0.3)
    again = await post(http, {**body(), **BYPASS})
    assert MARKER_FALSE in again.content
    assert len(sim.state.requests) == 2
    assert await counts() == []


@pytest.mark.parametrize("window_seconds", ["0"])
async def test_a_window_of_zero_turns_de_duplication_off(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(text_script(3), text_script(3))
    await post(http, {**body(), **BYPASS})
    again = await post(http, {**body(), **BYPASS})
    assert MARKER_FALSE in again.content
    assert len(sim.state.requests) == 2
    assert await fetch_rows("SELECT 1 FROM idempotency_keys") == []


async def test_another_users_identical_request_is_not_de_duplicated(
    http: httpx.AsyncClient, sim: RunningSimulator, served: ServedApp, bob: NewUser
) -> None:
    sim.state.enqueue(text_script(3), text_script(3))
    await post(http, {**body(), **BYPASS})
    async with client_of(served, bob) as bobs:
        his = await post(bobs, {**body(), **BYPASS})
    assert MARKER_FALSE in his.content
    assert len(sim.state.requests) == 2


async def test_another_input_is_not_de_duplicated(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(text_script(3), text_script(2))
    await post(http, {**body(), **BYPASS})
    other = await post(http, {**body(2), **BYPASS})
    assert MARKER_FALSE in other.content
    assert len(sim.state.requests) == 2


async def test_an_identical_request_while_the_first_runs_is_conflict(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    slow = ScriptedResponse(provider="openai", reply=text_script(3).reply, usage=text_script(3).usage, delay_ms=1_000)
    sim.state.enqueue(slow)
    first = asyncio.create_task(post(http, {**body(), **BYPASS}))
    await until_received(sim, 1)
    second = await post(http, {**body(), **BYPASS})
    assert second.status_code == 409
    assert second.json()["error"]["data"]["code"] == "CONFLICT"
    assert (await first).status_code == 200
    assert len(sim.state.requests) == 1


async def test_a_failed_request_is_not_kept_so_a_repeat_runs(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", status=400), text_script(3))
    failed = await post(http, {**body(), **BYPASS})
    assert failed.status_code == 400
    again = await post(http, {**body(), **BYPASS})
    assert again.status_code == 200
    assert MARKER_FALSE in again.content
    assert len(sim.state.requests) == 2


async def test_an_idempotency_key_works_as_for_every_mutation(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(text_script(3), text_script(3))
    first = await post(http, {**body(), **BYPASS, "idempotencyKey": "k-1"})
    replay = await post(http, {**body(), **BYPASS, "idempotencyKey": "k-1"})
    assert MARKER_TRUE in replay.content
    assert replay.content.replace(MARKER_TRUE, MARKER_FALSE) == first.content
    assert len(sim.state.requests) == 1
    other = await post(http, {**body(2), **BYPASS, "idempotencyKey": "k-1"})
    assert other.json()["error"]["data"]["code"] == "UNPROCESSABLE_CONTENT"
    fresh = await post(http, {**body(), **BYPASS, "idempotencyKey": "k-2"})
    assert MARKER_FALSE in fresh.content, "a key of its own: the caller asked for a new run"
    assert len(sim.state.requests) == 2
    assert await counts() == [("personas.generate", 1, 0)]


async def test_chat_mutations_do_not_de_duplicate(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    for _ in range(2):
        response = await http.post("/chat.sendMessage", json={"message": "Hello", "model": "gpt-4o-mini"})
        assert MARKER_FALSE in response.content
    assert len(sim.state.requests) == 2


async def test_lead_data_in_another_key_order_is_the_same_request_for_keys_and_de_duplication(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    """A client that rebuilds its JSON object (another key order) repeats the same request: it is de-duplicated, and a
    repeat with its idempotency key replays rather than being refused as another input."""
    reordered = {"signals": {"visitedPricing": True}, "employees": 240, "company": "Acme Robotics"}
    sim.state.enqueue(text_script(3), text_script(3))
    first = await post(http, {**body(), **BYPASS})
    again = await post(http, {**body(), **BYPASS, "leadData": reordered})
    assert MARKER_TRUE in again.content
    assert len(sim.state.requests) == 1

    keyed = await post(http, {**body(), **BYPASS, "idempotencyKey": "lead-1", "config": {"numPersonas": 3}})
    replayed = await post(http, {**body(), **BYPASS, "idempotencyKey": "lead-1", "leadData": reordered})
    assert first.status_code == keyed.status_code == replayed.status_code == 200, replayed.text
    assert MARKER_TRUE in replayed.content
    assert len(sim.state.requests) == 2
