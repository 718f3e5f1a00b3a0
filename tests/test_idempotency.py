"""Idempotency keys: a mutation runs once per key, user and procedure, and a repeat replays what it answered
(``server/rpc/idempotency.py``, ``server/idempotency.py``; README, "Idempotency")."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from schemas.chat import SendMessageInput
from schemas.registry import ProcedureKind
from schemas.router import APP_REGISTRY
from server.admin import check_totals
from server.idempotency import IdempotencyKeys
from server.llm.ledger import INTERRUPTED, LeasePolicy
from server.rpc.idempotency import IdempotentCall
from server.simulator import RunningSimulator, ScriptedResponse
from server.users import NewUser, create_user
from tests.conftest import ServedApp, app_database, fetch_rows, simulator_env, until_received
from tests.test_call_ledger import _server
from tollbooth_client import TollboothClient

MARKER_FALSE = b'"fromIdempotentCache":false'
MARKER_TRUE = b'"fromIdempotentCache":true'


@pytest.fixture
async def bob(db: None) -> NewUser:
    return await create_user("bob")


@pytest.fixture
async def http(app_server: ServedApp, alice: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {alice.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers, timeout=30) as client:
        yield client


def _send(key: str | None = None, message: str = "Hello", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "model": "gpt-4o-mini", **fields}
    if key is not None:
        body["idempotencyKey"] = key
    return body


def _code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["data"]["code"]
    return code


async def _keys() -> list[dict[str, Any]]:
    return await fetch_rows("SELECT * FROM idempotency_keys")


def test_every_mutation_takes_a_key_and_marks_a_replay() -> None:
    mutations = [p for p in APP_REGISTRY if p.kind is ProcedureKind.MUTATION]
    assert mutations
    for procedure in mutations:
        assert procedure.input is not None
        takes = {f.encode_name for f in msgspec.structs.fields(procedure.input)}
        gives = {f.encode_name for f in msgspec.structs.fields(procedure.output)}
        assert "idempotencyKey" in takes, procedure.path
        assert "fromIdempotentCache" in gives, procedure.path


async def test_the_same_key_twice_calls_the_provider_once_and_replays_the_body_byte_for_byte(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    first = await http.post("/chat.sendMessage", json=_send("order-1"))
    again = await http.post("/chat.sendMessage", json=_send("order-1"))
    assert first.status_code == again.status_code == 200
    assert len(sim.state.requests) == 1
    assert first.content.count(MARKER_FALSE) == 1
    assert again.content == first.content.replace(MARKER_FALSE, MARKER_TRUE)
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) == 1
    [conversation] = await fetch_rows("SELECT llm_calls FROM conversations")
    assert conversation["llm_calls"] == 1


async def test_the_key_is_not_part_of_the_input_it_guards(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    """The input is compared as decoded: a field sent at its default is the same request."""
    first = await http.post("/chat.sendMessage", json=_send("k"))
    again = await http.post("/chat.sendMessage", json=_send("k", systemPrompt=None, maxTokens=None))
    assert again.json()["result"]["data"]["fromIdempotentCache"] is True
    assert again.json()["result"]["data"]["messageId"] == first.json()["result"]["data"]["messageId"]
    assert len(sim.state.requests) == 1


async def test_the_same_key_with_another_input_is_unprocessable_content(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    await http.post("/chat.sendMessage", json=_send("k", "Hello"))
    other = await http.post("/chat.sendMessage", json=_send("k", "Goodbye"))
    assert other.status_code == 422
    assert _code(other) == "UNPROCESSABLE_CONTENT"
    assert "another input" in other.json()["error"]["message"]
    assert len(sim.state.requests) == 1


async def test_twenty_concurrent_calls_with_one_key_make_one_provider_call(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=300))
    responses = await asyncio.gather(*(http.post("/chat.sendMessage", json=_send("double-click")) for _ in range(20)))
    assert len(sim.state.requests) == 1
    ran = [r for r in responses if r.status_code == 200 and MARKER_FALSE in r.content]
    replayed = [r for r in responses if r.status_code == 200 and MARKER_TRUE in r.content]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(ran) == 1
    assert len(ran) + len(replayed) + len(conflicts) == 20
    assert all(_code(r) == "CONFLICT" and "still running" in r.json()["error"]["message"] for r in conflicts)
    assert all(r.content == ran[0].content.replace(MARKER_FALSE, MARKER_TRUE) for r in replayed)
    after = await http.post("/chat.sendMessage", json=_send("double-click"))
    assert after.content == ran[0].content.replace(MARKER_FALSE, MARKER_TRUE)


async def test_one_users_key_never_answers_another_user(
    app_server: ServedApp, http: httpx.AsyncClient, bob: NewUser, sim: RunningSimulator
) -> None:
    alices = await http.post("/chat.sendMessage", json=_send("shared-key"))
    bobs = await http.post(
        "/chat.sendMessage", json=_send("shared-key"), headers={"authorization": f"Bearer {bob.api_key}"}
    )
    assert bobs.status_code == 200
    assert bobs.json()["result"]["data"]["fromIdempotentCache"] is False
    assert bobs.json()["result"]["data"]["conversationId"] != alices.json()["result"]["data"]["conversationId"]
    assert len(sim.state.requests) == 2
    assert len(await _keys()) == 2


async def test_keys_are_per_procedure(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    await http.post("/chat.sendMessage", json=_send("k"))
    action = await http.post(
        "/chat.executeAction", json={"action": "classify_intent", "text": "Hi", "idempotencyKey": "k"}
    )
    assert action.status_code == 200
    assert action.json()["result"]["data"]["fromIdempotentCache"] is False
    assert len(sim.state.requests) == 2


async def test_a_batch_of_three_mutations_with_three_keys_replays_each_call(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    path = "/chat.sendMessage,chat.executeAction,chat.summarizeEmail?batch=1"
    body = {
        "0": _send("batch-0"),
        "1": {"action": "extract_tasks", "text": "Send the report by Friday", "idempotencyKey": "batch-1"},
        "2": {"email": {"body": "The meeting moves to 3pm."}, "idempotencyKey": "batch-2"},
    }
    first = await http.post(path, json=body)
    assert first.status_code == 200
    assert len(sim.state.requests) == 3
    again = await http.post(path, json=body)
    assert len(sim.state.requests) == 3
    for ran, replayed in zip(first.json(), again.json(), strict=True):
        assert ran["result"]["data"]["fromIdempotentCache"] is False
        assert replayed["result"]["data"] == {**ran["result"]["data"], "fromIdempotentCache": True}
    mixed = await http.post(path, json={**body, "1": {**body["1"], "idempotencyKey": "batch-new"}})
    assert [call["result"]["data"]["fromIdempotentCache"] for call in mixed.json()] == [True, False, True]
    assert len(sim.state.requests) == 4


async def test_the_header_carries_the_key_quoted_or_bare(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    quoted = await http.post("/chat.sendMessage", json=_send(), headers={"Idempotency-Key": '"via-header"'})
    bare = await http.post("/chat.sendMessage", json=_send(), headers={"idempotency-key": "via-header"})
    in_input = await http.post("/chat.sendMessage", json=_send("via-header"))
    both = await http.post("/chat.sendMessage", json=_send("via-header"), headers={"Idempotency-Key": "via-header"})
    assert quoted.json()["result"]["data"]["fromIdempotentCache"] is False
    for replay in (bare, in_input, both):
        assert replay.content == quoted.content.replace(MARKER_FALSE, MARKER_TRUE)
    assert len(sim.state.requests) == 1


@pytest.mark.parametrize(
    ("path", "body", "header"),
    [
        ("/chat.sendMessage", _send("in-the-input"), "in-the-header"),
        ("/chat.sendMessage", _send(), '""'),
        ("/chat.sendMessage", _send(), "x" * 256),
        ("/chat.sendMessage,chat.sendMessage?batch=1", {"0": _send(), "1": _send("other")}, "k"),
    ],
    ids=["differs-from-the-input", "empty", "too-long", "on-a-batch"],
)
async def test_a_header_that_cannot_be_the_calls_key_is_bad_request(
    http: httpx.AsyncClient, sim: RunningSimulator, path: str, body: dict[str, Any], header: str
) -> None:
    response = await http.post(path, json=body, headers={"Idempotency-Key": header})
    assert response.status_code == 400
    assert response.json()["error"]["data"]["code"] == "BAD_REQUEST"
    assert sim.state.requests == []
    assert await _keys() == []


async def test_an_input_key_of_256_characters_is_bad_request(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    response = await http.post("/chat.sendMessage", json=_send("k" * 256))
    assert _code(response) == "BAD_REQUEST"
    assert "idempotencyKey" in response.json()["error"]["message"]
    accepted = await http.post("/chat.sendMessage", json=_send("k" * 255))
    assert accepted.status_code == 200


async def test_a_business_error_is_kept_and_replayed(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    missing = _send("not-found", conversationId=str(uuid.uuid4()))
    first = await http.post("/chat.sendMessage", json=missing)
    again = await http.post("/chat.sendMessage", json=missing)
    assert _code(first) == "NOT_FOUND"
    assert again.status_code == 404
    assert again.content == first.content
    [key] = await _keys()
    assert key["http_status"] == 404


async def test_a_transient_failure_releases_the_key_so_a_retry_runs(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", status=429))
    limited = await http.post("/chat.sendMessage", json=_send("retry-me"))
    assert _code(limited) == "TOO_MANY_REQUESTS"
    assert await _keys() == []
    retried = await http.post("/chat.sendMessage", json=_send("retry-me"))
    assert retried.status_code == 200
    assert retried.json()["result"]["data"]["fromIdempotentCache"] is False
    assert len(sim.state.requests) == 2


async def test_a_validation_failure_in_the_handler_keeps_nothing(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    response = await http.post("/chat.sendMessage", json=_send("bad-model", model="llama-3"))
    assert _code(response) == "BAD_REQUEST"
    assert await _keys() == []


async def test_admin_budget_mutations_take_keys(app_server: ServedApp, db: None, sim: RunningSimulator) -> None:
    root = await create_user("root", is_admin=True)
    headers = {"authorization": f"Bearer {root.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers) as admin:
        budget = {"scope": "global", "period": "day", "limitUsd": "10", "idempotencyKey": "budget-1"}
        first = await admin.post("/admin.setBudget", json=budget)
        again = await admin.post("/admin.setBudget", json=budget)
        assert again.content == first.content.replace(MARKER_FALSE, MARKER_TRUE)
        changed = await admin.post("/admin.setBudget", json={**budget, "limitUsd": "20"})
        assert _code(changed) == "UNPROCESSABLE_CONTENT"
        budget_id = first.json()["result"]["data"]["budgetId"]
        deletion = {"budgetId": budget_id, "idempotencyKey": "delete-1"}
        deleted = await admin.post("/admin.deleteBudget", json=deletion)
        repeated = await admin.post("/admin.deleteBudget", json=deletion)
        assert deleted.status_code == repeated.status_code == 200  # not NOT_FOUND: the deletion is replayed
        assert repeated.json()["result"]["data"]["fromIdempotentCache"] is True


async def test_the_python_client_passes_a_key_in_the_input(client: TollboothClient, sim: RunningSimulator) -> None:
    request = SendMessageInput(message="Hello", model="gpt-4o-mini", idempotency_key=str(uuid.uuid4()))
    first = await client.chat.send_message(request)
    again = await client.chat.send_message(request)
    assert (first.from_idempotent_cache, again.from_idempotent_cache) == (False, True)
    assert msgspec.structs.replace(again, from_idempotent_cache=False) == first
    assert len(sim.state.requests) == 1


# --- the store on its own -----------------------------------------------------------------------------------------


def _store(lease_seconds: float = 10.0, ttl_seconds: float = 60.0) -> IdempotencyKeys:
    lease = LeasePolicy(timeout_seconds=lease_seconds / 2, retries=0, margin_seconds=0)
    return IdempotencyKeys(app_database(), ttl_seconds=ttl_seconds, lease=lease)


def _call(key: str = "k", request_hash: bytes = b"h" * 32) -> IdempotentCall:
    return IdempotentCall(user_id=uuid.uuid4(), procedure="chat.sendMessage", key=key, request_hash=request_hash)


async def test_a_running_key_is_taken_over_only_after_its_lease(db: None) -> None:
    store, call = _store(), _call()
    t0 = datetime.datetime.now(datetime.UTC)
    first = await store.claim(call, now=t0)
    assert isinstance(first, uuid.UUID)
    held = await store.claim(call, now=t0 + datetime.timedelta(seconds=9))
    assert not isinstance(held, uuid.UUID)
    assert held.http_status is None
    second = await store.claim(call, now=t0 + datetime.timedelta(seconds=11))
    assert isinstance(second, uuid.UUID)
    await store.complete(call, first, 200, b"{}")  # the first claim's answer is too late: it lost the key
    [row] = await _keys()
    assert (row["claim_id"], row["http_status"]) == (second, None)


async def test_kept_keys_expire_and_are_pruned(db: None) -> None:
    store, call = _store(ttl_seconds=60), _call()
    t0 = datetime.datetime.now(datetime.UTC)
    claim_id = await store.claim(call, now=t0)
    assert isinstance(claim_id, uuid.UUID)
    await store.complete(call, claim_id, 200, b"{}", now=t0)
    assert await store.prune(now=t0 + datetime.timedelta(seconds=59)) == 0
    assert isinstance(await store.claim(call, now=t0 + datetime.timedelta(seconds=61)), uuid.UUID)  # free again
    assert await store.prune(now=t0 + datetime.timedelta(days=2)) == 1
    assert await _keys() == []


# --- a process killed between the claim and the result -----------------------------------------------------------


async def test_a_key_whose_process_was_killed_runs_again_after_its_lease(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **simulator_env(
            sim,
            DATA_DIR=str(tmp_path / "data"),
            PROVIDER_TIMEOUT_SECONDS="1",
            CLAIM_LEASE_MARGIN_SECONDS="0",
            CLAIM_SWEEP_INTERVAL_SECONDS="0.2",
        ),
    }
    log = tmp_path / "server.log"
    headers = {"authorization": f"Bearer {alice.api_key}"}
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=5_000))
    body = _send("killed", maxTokens=50)
    with _server(env, log) as (process, base):
        async with httpx.AsyncClient(base_url=f"{base}/trpc", headers=headers, timeout=10) as http:
            call = asyncio.create_task(http.post("/chat.sendMessage", json=body))
            await until_received(sim, 1)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            assert isinstance((await asyncio.gather(call, return_exceptions=True))[0], httpx.TransportError)
    [key] = await _keys()
    assert key["http_status"] is None  # still running, as far as the database knows

    with _server(env, log) as (_, base):
        async with httpx.AsyncClient(base_url=f"{base}/trpc", headers=headers, timeout=10) as http:
            deadline = time.monotonic() + 30
            while (retried := await http.post("/chat.sendMessage", json=body)).status_code == 409:
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            assert retried.status_code == 200, retried.text
            assert retried.json()["result"]["data"]["fromIdempotentCache"] is False
            replayed = await http.post("/chat.sendMessage", json=body)
            assert replayed.content == retried.content.replace(MARKER_FALSE, MARKER_TRUE)
            while await fetch_rows("SELECT 1 FROM llm_call_claims"):  # the sweeper records the killed call
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)

    assert len(sim.state.requests) == 2
    rows = await fetch_rows("SELECT status, error_type FROM ai_usage_logs ORDER BY created_at")
    assert [(row["status"], row["error_type"]) for row in rows] == [("error", INTERRUPTED), ("ok", None)]
    [key] = await _keys()
    assert key["http_status"] == 200
    assert (await check_totals(app_database())).consistent
