"""The call ledger: a claim is committed before a request leaves, settled by the record, and swept when its process
died, so that every request a provider received has exactly one row (``server/llm/ledger.py``)."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from schemas.chat import ExecuteActionInput, SendMessageInput
from server.admin import check_totals
from server.database import Database
from server.errors import ConversationNotFoundError, DatabaseUnavailableError
from server.llm.core import Attribution
from server.llm.ledger import INTERRUPTED, Claim
from server.llm.providers import ChatTurn, CompletionRequest
from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import NewUser, create_user
from tests.conftest import ROOT, MakeServices, app_database, fetch_rows, simulator_env, until_received

T0 = datetime.datetime(2026, 11, 1, 12, tzinfo=datetime.UTC)


def _request(model: str = "gpt-4o", text: str = "x" * 40, max_tokens: int | None = None) -> CompletionRequest:
    return CompletionRequest(model=model, messages=(ChatTurn(role="user", content=text),), max_tokens=max_tokens)


async def _claims() -> list[dict[str, object]]:
    return await fetch_rows("SELECT * FROM llm_call_claims ORDER BY created_at")


async def test_the_claim_is_committed_before_the_request_leaves_and_settled_by_the_record(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    services = make_services()
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=400, usage=ScriptedUsage(prompt=10, completion=3)))
    call = asyncio.create_task(
        services.llm.invoke(_request(max_tokens=64), Attribution(user_id=alice.id, procedure="test.ledger"))
    )
    await until_received(sim, 1)
    [claim] = await _claims()  # the provider has the request: its claim is already committed
    assert (claim["user_id"], claim["procedure"], claim["provider"], claim["requested_model"]) == (
        alice.id,
        "test.ledger",
        "openai",
        "gpt-4o",
    )
    assert (claim["prompt_tokens_estimate"], claim["max_output_tokens"]) == (10, 64)
    assert await fetch_rows("SELECT 1 FROM ai_usage_logs") == []
    result = await call
    assert await _claims() == []
    [row] = await fetch_rows("SELECT call_id, status FROM ai_usage_logs")
    assert row == {"call_id": claim["call_id"], "status": "ok"}
    assert result.call_id == claim["call_id"]


async def test_an_expired_claim_is_settled_once_as_an_interrupted_estimated_call_in_its_conversation(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    services = make_services()
    first = await services.chat.send_message(alice.id, SendMessageInput(message="hello", model="gpt-4o"))
    assert first.conversation_id is not None
    claim = Claim(
        call_id=uuid.uuid4(),
        user_id=alice.id,
        conversation_id=first.conversation_id,
        procedure="chat.sendMessage",
        provider="openai",
        requested_model="gpt-4o",
        prompt_tokens_estimate=1_000,
        max_output_tokens=200,
        metadata={"task": "chat"},
        created_at=T0,
        lease_expires_at=T0 + datetime.timedelta(minutes=3),
    )
    await services.llm.ledger.claim(claim)
    ledger = services.llm.ledger
    assert await ledger.sweep(T0 + datetime.timedelta(minutes=2)) == 0  # the lease still runs: the process may live
    assert await ledger.sweep(T0 + datetime.timedelta(minutes=4)) == 1
    assert await ledger.sweep(T0 + datetime.timedelta(minutes=5)) == 0
    [row] = await fetch_rows(
        "SELECT status, error_type, usage_estimated, input_tokens, output_tokens, estimated_cost_usd, metadata::text"
        " AS metadata FROM ai_usage_logs WHERE call_id = $1",
        claim.call_id,
    )
    # gpt-4o: 1,000 input tokens at $2.50/M and 200 output tokens at $10/M.
    assert row == {
        "status": "error",
        "error_type": INTERRUPTED,
        "usage_estimated": True,
        "input_tokens": 1_000,
        "output_tokens": 200,
        "estimated_cost_usd": Decimal("0.0045"),
        "metadata": '{"task": "chat"}',
    }
    [conversation] = await fetch_rows("SELECT llm_calls FROM conversations WHERE id = $1", first.conversation_id)
    assert conversation["llm_calls"] == 2
    assert (await check_totals(app_database())).consistent
    assert await _claims() == []


async def test_two_sweepers_settle_each_claim_exactly_once(make_services: MakeServices, alice: NewUser) -> None:
    services = make_services()
    for _ in range(250):
        await services.llm.ledger.claim(
            Claim(
                call_id=uuid.uuid4(),
                user_id=alice.id,
                conversation_id=None,
                procedure="chat.executeAction",
                provider="anthropic",
                requested_model="claude-haiku-4-5",
                prompt_tokens_estimate=100,
                max_output_tokens=None,
                created_at=T0,
                lease_expires_at=T0,
            )
        )
    later = T0 + datetime.timedelta(seconds=1)
    other = make_services()
    settled = await asyncio.gather(services.llm.ledger.sweep(later), other.llm.ledger.sweep(later))
    assert sum(settled) == 250
    [count] = await fetch_rows("SELECT count(*) AS n, count(DISTINCT call_id) AS calls FROM ai_usage_logs")
    assert count == {"n": 250, "calls": 250}


async def test_a_call_on_someone_elses_conversation_is_refused_by_its_claim_and_never_sent(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    services = make_services()
    bob = await create_user("bob")
    bobs = await services.chat.send_message(bob.id, SendMessageInput(message="mine", model="gpt-4o"))
    assert bobs.conversation_id is not None
    sent = len(sim.state.requests)
    with pytest.raises(ConversationNotFoundError):
        await services.chat.execute_action(
            alice.id,
            ExecuteActionInput(
                action="classify_intent", text="hi", model="gpt-4o", conversation_id=bobs.conversation_id
            ),
        )
    assert len(sim.state.requests) == sent
    assert await _claims() == []


async def test_with_the_database_down_a_call_that_reads_nothing_runs_on_a_spooled_claim(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, unreachable_database: Database
) -> None:
    down = make_services(unreachable_database)
    down.llm.ledger.hard_budgets_exist = False  # what its sweeper learnt before the database went away
    result = await down.chat.send_message(alice.id, SendMessageInput(message="still there?", model="gpt-4o"))
    assert result.conversation is None  # recorded later, from the spool
    assert down.llm.spool.pending_claims() == []  # the spooled record superseded the claim
    [_] = down.llm.spool.pending()
    up = make_services()
    assert await up.llm.replay_spool() == 1
    assert await _claims() == []
    [row] = await fetch_rows("SELECT status FROM ai_usage_logs")
    assert row == {"status": "ok"}


async def test_a_spooled_claim_whose_process_died_is_replayed_and_swept(
    make_services: MakeServices, alice: NewUser, unreachable_database: Database
) -> None:
    down = make_services(unreachable_database)
    claim = Claim(
        call_id=uuid.uuid4(),
        user_id=alice.id,
        conversation_id=None,
        procedure="chat.sendMessage",
        provider="openai",
        requested_model="gpt-4o-mini",
        prompt_tokens_estimate=40,
        max_output_tokens=None,
        created_at=T0,
        lease_expires_at=T0,
    )
    down.llm.spool.put_claim(claim)  # what _start wrote before the process was killed
    up = make_services()
    assert await up.llm.replay_spool() == 1
    assert up.llm.spool.pending_claims() == []
    assert await up.llm.ledger.sweep(T0 + datetime.timedelta(seconds=1)) == 1
    [row] = await fetch_rows("SELECT call_id, error_type, input_tokens FROM ai_usage_logs")
    assert row == {"call_id": claim.call_id, "error_type": INTERRUPTED, "input_tokens": 40}
    # Replaying the same claim again (a second worker, a crash before the unlink) resurrects nothing.
    await up.llm.ledger.replay(claim)
    assert await _claims() == []


async def test_with_the_database_down_a_call_that_must_check_its_conversation_is_refused_before_sending(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, unreachable_database: Database
) -> None:
    down = make_services(unreachable_database)
    with pytest.raises(DatabaseUnavailableError):
        await down.chat.execute_action(
            alice.id,
            ExecuteActionInput(action="draft_reply", text="hi", model="gpt-4o", conversation_id=uuid.uuid4()),
        )
    assert sim.state.requests == []
    assert down.llm.spool.pending_claims() == []


# --- a process killed with calls in flight ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _server(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=ROOT, env={**env, "PORT": str(port)}, stdout=output, stderr=output
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


async def test_a_process_killed_with_calls_in_flight_leaves_one_row_per_request_the_provider_received(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path
) -> None:
    in_flight = 16
    env = {
        **os.environ,
        **simulator_env(
            sim,
            DATA_DIR=str(tmp_path / "data"),
            PROVIDER_TIMEOUT_SECONDS="4",
            CLAIM_LEASE_MARGIN_SECONDS="0",
            CLAIM_SWEEP_INTERVAL_SECONDS="0.2",
        ),
    }
    log = tmp_path / "server.log"
    headers = {"authorization": f"Bearer {alice.api_key}"}
    sim.state.enqueue(ScriptedResponse(provider="openai", usage=ScriptedUsage(prompt=20, completion=5)))
    sim.state.enqueue(*[ScriptedResponse(provider="openai", delay_ms=3_000) for _ in range(in_flight)])
    with _server(env, log) as (process, base):
        async with httpx.AsyncClient(base_url=f"{base}/trpc", headers=headers, timeout=10) as http:
            first = await http.post("/chat.sendMessage", json={"message": "start", "model": "gpt-4o"})
            conversation_id = first.json()["result"]["data"]["conversationId"]
            calls = [
                asyncio.create_task(
                    http.post(
                        "/chat.sendMessage",
                        json={"message": f"question {i}", "conversationId": conversation_id, "maxTokens": 50},
                    )
                )
                for i in range(in_flight)
            ]
            await until_received(sim, 1 + in_flight)
            os.kill(process.pid, signal.SIGKILL)  # as an out-of-memory kill or a hard redeploy does
            process.wait(timeout=10)
            for outcome in await asyncio.gather(*calls, return_exceptions=True):
                assert isinstance(outcome, httpx.TransportError)
    assert len(await _claims()) == in_flight
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) == 1

    with _server(env, log):  # the restarted service sweeps the claims once their lease (4 s) has run out
        deadline = time.monotonic() + 30
        while await _claims():
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)

    rows = await fetch_rows("SELECT error_type, usage_estimated, output_tokens FROM ai_usage_logs")
    assert len(rows) == len(sim.state.requests) == 1 + in_flight
    interrupted = [row for row in rows if row["error_type"] == INTERRUPTED]
    assert len(interrupted) == in_flight
    assert all(row["usage_estimated"] and row["output_tokens"] == 50 for row in interrupted)
    [conversation] = await fetch_rows("SELECT llm_calls FROM conversations WHERE id = $1", uuid.UUID(conversation_id))
    assert conversation["llm_calls"] == 1 + in_flight
    assert (await check_totals(app_database())).consistent


async def test_with_the_database_down_a_call_is_refused_when_a_hard_budget_may_apply(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, unreachable_database: Database
) -> None:
    """A budget cannot be checked without the database: a process that knows of a hard budget (or has not learnt
    yet whether one exists) refuses rather than spend past it on a spooled claim."""
    down = make_services(unreachable_database)
    for known in (None, True):
        down.llm.ledger.hard_budgets_exist = known
        with pytest.raises(DatabaseUnavailableError):
            await down.chat.send_message(alice.id, SendMessageInput(message="hi", model="gpt-4o"))
    assert sim.state.requests == []
    assert down.llm.spool.pending_claims() == []
