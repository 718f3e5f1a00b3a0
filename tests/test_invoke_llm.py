"""invoke_llm with the real SDKs over HTTP against the simulator, and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from server.database import Database
from server.errors import LLMError, LLMFailure
from server.llm.core import Attribution
from server.llm.providers import ChatTurn, CompletionRequest
from server.llm.routing import provider_for_model
from server.rpc.errors import to_trpc_error
from server.settings import Settings
from server.simulator import INVALID_API_KEY, RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import create_user
from tests.conftest import MakeServices, app_database, serve_app, simulator_env


@pytest.fixture
async def user_id(db: None) -> uuid.UUID:
    return (await create_user("tester")).id


def _request(model: str, text: str = "Hello there") -> CompletionRequest:
    return CompletionRequest(model=model, messages=(ChatTurn(role="user", content=text),))


async def _usage_rows(**where: Any) -> list[dict[str, Any]]:
    clauses = " AND ".join(f"{column} = ${i}" for i, column in enumerate(where, start=1)) or "true"
    rows = await app_database().fetch(
        f"SELECT * FROM ai_usage_logs WHERE {clauses} ORDER BY created_at", *where.values()
    )
    return list(rows)


@pytest.mark.parametrize(
    ("model", "provider"),
    [("gpt-4o", "openai"), ("o3-mini", "openai"), ("claude-haiku-4-5", "anthropic"), ("gemini-2.5-pro", "gemini")],
)
def test_the_provider_is_picked_from_the_model_name(model: str, provider: str) -> None:
    assert provider_for_model(model) == provider


def test_an_unknown_model_family_is_a_bad_request() -> None:
    with pytest.raises(LLMError) as raised:
        provider_for_model("llama-3-70b")
    assert raised.value.failure is LLMFailure.UNKNOWN_MODEL
    assert to_trpc_error(raised.value).code == "BAD_REQUEST"


async def test_openai_cached_tokens_are_priced_at_the_cache_rate(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID
) -> None:
    sim.state.enqueue(
        ScriptedResponse(
            provider="openai",
            reply="hi",
            model="gpt-4o-2024-08-06",
            usage=ScriptedUsage(prompt=1000, cached=200, completion=100),
        )
    )
    services = make_services()
    conversation_id = uuid.uuid4()
    result = await services.llm.invoke(
        _request("gpt-4o"),
        Attribution(
            user_id=user_id,
            procedure="chat.sendMessage",
            conversation_id=conversation_id,
            new_conversation=True,
            conversation_title="t",
        ),
        store=[("user", "Hello there")],
        store_reply=True,
    )
    assert result.priced.total_cost == Decimal("0.00325")
    assert result.model == "gpt-4o-2024-08-06"
    assert (result.usage.input, result.usage.cache_read, result.usage.output) == (800, 200, 100)
    [row] = await _usage_rows(call_id=result.call_id)
    assert row["estimated_cost_usd"] == Decimal("0.00325")
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (800, 200, 100)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (1000, 100, 1100)
    assert (row["rate_input"], row["rate_cache_read"], row["rate_output"]) == (
        Decimal("2.5"),
        Decimal("1.25"),
        Decimal(10),
    )
    assert row["requested_model"] == "gpt-4o"
    assert row["model"] == "gpt-4o-2024-08-06"
    assert row["status"] == "ok"
    assert row["conversation_id"] == conversation_id
    assert row["message_id"] == result.message_id
    assert result.totals is not None
    assert result.totals.total_cost_usd == Decimal("0.00325")
    assert (result.totals.total_prompt_tokens, result.totals.total_output_tokens) == (1000, 100)


async def test_anthropic_cache_tokens_are_not_counted_twice(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID
) -> None:
    sim.state.enqueue(
        ScriptedResponse(
            provider="anthropic",
            reply="hi",
            usage=ScriptedUsage(input=1000, cache_write_5m=1500, cache_write_1h=500, cache_read=3000, output=100),
        )
    )
    result = await make_services().llm.invoke(
        _request("claude-sonnet-4-5"), Attribution(user_id=user_id, procedure="chat.executeAction")
    )
    assert result.priced.total_cost == Decimal("0.014025")
    [row] = await _usage_rows(call_id=result.call_id)
    assert (row["input_tokens"], row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (1000, 1500, 500)
    assert (row["cache_read_tokens"], row["output_tokens"]) == (3000, 100)
    assert row["conversation_id"] is None
    assert row["user_id"] == user_id
    assert row["estimated_cost_usd"] == Decimal("0.014025")


async def test_gemini_thinking_is_billed_as_output_at_the_long_prompt_tier(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID
) -> None:
    sim.state.enqueue(
        ScriptedResponse(
            provider="gemini",
            reply="hi",
            usage=ScriptedUsage(prompt=210_000, cached=150_000, completion=1000, thoughts=2000),
        )
    )
    result = await make_services().llm.invoke(
        _request("gemini-2.5-pro"), Attribution(user_id=user_id, procedure="chat.summarizeEmail")
    )
    assert result.usage.output == 3000
    assert result.priced.total_cost == Decimal("0.2325")
    [row] = await _usage_rows(call_id=result.call_id)
    assert row["price_tier"] == "prompt>200000"
    assert row["rate_input"] == Decimal("2.5")


async def test_an_unknown_model_is_recorded_unpriced_not_free(make_services: MakeServices, user_id: uuid.UUID) -> None:
    conversation_id = uuid.uuid4()
    result = await make_services().llm.invoke(
        _request("gpt-99-experimental"),
        Attribution(
            user_id=user_id,
            procedure="chat.sendMessage",
            conversation_id=conversation_id,
            new_conversation=True,
            conversation_title="t",
        ),
        store=[("user", "Hello there")],
        store_reply=True,
    )
    assert result.priced.status == "unpriced"
    assert result.priced.total_cost is None
    [row] = await _usage_rows(call_id=result.call_id)
    assert row["pricing_status"] == "unpriced"
    assert row["estimated_cost_usd"] is None
    assert result.totals is not None
    assert (result.totals.unpriced_calls, result.totals.llm_calls) == (1, 1)
    assert result.totals.total_cost_usd is None  # every call unpriced: unknown, not zero


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ({"status": 429, "retry_after": 0}, "TOO_MANY_REQUESTS"),
        ({"status": 500}, "BAD_GATEWAY"),
        ({"status": 503}, "SERVICE_UNAVAILABLE"),
        ({"malformed": True}, "BAD_GATEWAY"),
        ({"delay_ms": 1500}, "GATEWAY_TIMEOUT"),
    ],
)
@pytest.mark.parametrize(
    ("provider", "model"), [("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash")]
)
async def test_a_provider_failure_is_a_typed_error_and_an_error_row(
    make_services: MakeServices,
    sim: RunningSimulator,
    user_id: uuid.UUID,
    provider: Any,
    model: str,
    script: dict[str, Any],
    code: str,
) -> None:
    sim.state.enqueue(ScriptedResponse(provider=provider, **script))
    services = make_services(PROVIDER_TIMEOUT_SECONDS="1")
    with pytest.raises(LLMError) as raised:
        await services.llm.invoke(_request(model), Attribution(user_id=user_id, procedure="chat.sendMessage"))
    assert to_trpc_error(raised.value).code == code
    [row] = await _usage_rows(user_id=user_id)
    assert row["status"] == "error"
    assert row["error_type"] == raised.value.error_type
    if script.get("malformed"):
        # The provider answered 200, so it billed the call: recorded with an estimate, never at zero.
        assert row["usage_estimated"] is True
        assert row["total_tokens"] > 0
    else:
        assert row["total_tokens"] == 0
    assert row["provider"] == provider


async def test_a_rejected_key_is_an_internal_error_that_does_not_leak_the_key(
    make_services: MakeServices, user_id: uuid.UUID
) -> None:
    services = make_services(OPENAI_API_KEY=INVALID_API_KEY)
    with pytest.raises(LLMError) as raised:
        await services.llm.invoke(_request("gpt-4o"), Attribution(user_id=user_id, procedure="chat.sendMessage"))
    assert raised.value.failure is LLMFailure.CREDENTIALS_REJECTED
    assert to_trpc_error(raised.value).code == "INTERNAL_SERVER_ERROR"
    assert INVALID_API_KEY not in str(raised.value)
    [row] = await _usage_rows(user_id=user_id)
    assert INVALID_API_KEY not in str(dict(row))


async def test_transient_failures_are_retried_within_the_bound(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID
) -> None:
    sim.state.enqueue(
        ScriptedResponse(provider="openai", status=500),
        ScriptedResponse(provider="openai", status=429, retry_after=0),
        ScriptedResponse(provider="openai", reply="third time lucky"),
    )
    services = make_services(PROVIDER_MAX_RETRIES="2")
    result = await services.llm.invoke(_request("gpt-4o"), Attribution(user_id=user_id, procedure="chat.sendMessage"))
    assert result.text == "third time lucky"
    assert len(sim.state.requests_to("openai")) == 3
    sim.state.enqueue(*[ScriptedResponse(provider="openai", status=500)] * 3)
    with pytest.raises(LLMError):
        await services.llm.invoke(_request("gpt-4o"), Attribution(user_id=user_id, procedure="chat.sendMessage"))
    assert len(sim.state.requests_to("openai")) == 6


async def test_a_caller_that_goes_away_leaves_a_cancelled_row(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=2000))
    services = make_services()
    call = asyncio.create_task(
        services.llm.invoke(_request("gpt-4o", "x" * 400), Attribution(user_id=user_id, procedure="chat.sendMessage"))
    )
    await asyncio.sleep(0.3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    [row] = await _usage_rows(user_id=user_id)
    assert row["status"] == "cancelled"
    assert row["usage_estimated"] is True
    assert row["input_tokens"] >= 100


async def test_a_database_outage_loses_nothing_and_replay_counts_once(
    make_services: MakeServices,
    sim: RunningSimulator,
    user_id: uuid.UUID,
    tmp_path: Path,
    unreachable_database: Database,
) -> None:
    down = make_services(unreachable_database)
    down.llm.ledger.hard_budgets_exist = False  # it knew no hard budget before the database went away
    conversation_id = uuid.uuid4()
    sim.state.enqueue(
        ScriptedResponse(
            provider="openai", reply="still answered", usage=ScriptedUsage(prompt=1000, cached=200, completion=100)
        )
    )
    result = await down.llm.invoke(
        _request("gpt-4o"),
        Attribution(
            user_id=user_id,
            procedure="chat.sendMessage",
            conversation_id=conversation_id,
            new_conversation=True,
            conversation_title="t",
        ),
        store=[("user", "Hello there")],
        store_reply=True,
    )
    assert result.text == "still answered"
    assert result.recorded is False
    assert result.totals is None
    [spooled] = down.llm.spool.pending()
    spooled_bytes = spooled.read_bytes()
    assert await _usage_rows(user_id=user_id) == []

    up = make_services()
    assert await up.llm.spool.replay(up.llm.recorder.write) == 1
    assert up.llm.spool.pending() == []
    [row] = await _usage_rows(user_id=user_id)
    assert row["call_id"] == result.call_id
    assert row["estimated_cost_usd"] == Decimal("0.00325")

    # The same record replayed again (as after a crash between the write and the unlink) counts once.
    spooled.write_bytes(spooled_bytes)
    assert await up.llm.spool.replay(up.llm.recorder.write) == 1
    assert len(await _usage_rows(user_id=user_id)) == 1
    totals = await app_database().fetch(
        "SELECT llm_calls, total_cost_usd FROM conversations WHERE id = $1", conversation_id
    )
    assert [(r["llm_calls"], r["total_cost_usd"]) for r in totals] == [(1, Decimal("0.00325"))]
    messages = await app_database().fetch(
        "SELECT role FROM messages WHERE conversation = $1 ORDER BY created_at", conversation_id
    )
    assert [m["role"] for m in messages] == ["user", "assistant"]


async def test_with_usage_logging_off_messages_are_kept_and_no_usage_is_written(
    make_services: MakeServices, user_id: uuid.UUID
) -> None:
    services = make_services(ENABLE_USAGE_LOGGING="false")
    conversation_id = uuid.uuid4()
    result = await services.llm.invoke(
        _request("gpt-4o"),
        Attribution(
            user_id=user_id,
            procedure="chat.sendMessage",
            conversation_id=conversation_id,
            new_conversation=True,
            conversation_title="t",
        ),
        store=[("user", "Hello there")],
        store_reply=True,
    )
    assert result.text
    assert await _usage_rows() == []
    rows = await app_database().fetch(
        "SELECT llm_calls, total_cost_usd FROM conversations WHERE id = $1", conversation_id
    )
    assert [(r["llm_calls"], r["total_cost_usd"]) for r in rows] == [(0, 0)]
    count = await app_database().fetch("SELECT count(*) AS n FROM messages WHERE conversation = $1", conversation_id)
    assert count[0]["n"] == 2


async def test_the_running_service_replays_the_spool_by_itself(
    make_services: MakeServices,
    sim: RunningSimulator,
    user_id: uuid.UUID,
    tmp_path: Path,
    unreachable_database: Database,
) -> None:
    down = make_services(unreachable_database)
    down.llm.ledger.hard_budgets_exist = False  # it knew no hard budget before the database went away
    result = await down.llm.invoke(_request("gpt-4o"), Attribution(user_id=user_id, procedure="chat.executeAction"))
    assert result.recorded is False
    async with serve_app(Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path)))):
        for _ in range(100):
            if await _usage_rows(call_id=result.call_id):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the spooled record was not replayed within 10 s")
    assert list((tmp_path / "usage-spool").glob("*.json")) == []


async def test_a_price_file_overrides_the_catalogue_from_its_effective_date(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[models]]\nprovider = "openai"\nmodel = "gpt-4o"\neffective_from = 2020-01-01\n'
        "input = 2.00\ncache_read = 1.00\noutput = 8.00\n"
    )
    services = make_services(PRICE_FILE=str(prices))
    sim.state.enqueue(
        ScriptedResponse(provider="openai", usage=ScriptedUsage(prompt=1000, cached=200, completion=100)),
    )
    negotiated = await services.llm.invoke(
        _request("gpt-4o"), Attribution(user_id=user_id, procedure="chat.sendMessage")
    )
    # 800 x 2.00 + 200 x 1.00 + 100 x 8.00, per million
    assert negotiated.priced.total_cost == Decimal("0.0026")
    [row] = await _usage_rows(call_id=negotiated.call_id)
    assert row["price_source"].startswith("prices.toml:gpt-4o")
    assert (row["rate_input"], row["rate_cache_read"], row["rate_output"]) == (Decimal(2), Decimal(1), Decimal(8))


async def test_a_record_the_database_refuses_is_set_aside_and_does_not_block_the_spool(
    make_services: MakeServices, user_id: uuid.UUID, tmp_path: Path, unreachable_database: Database
) -> None:
    down = make_services(unreachable_database)
    down.llm.ledger.hard_budgets_exist = False  # it knew no hard budget before the database went away
    poison = await down.llm.invoke(
        CompletionRequest(model="gpt-4o-" + "x" * 300, messages=(ChatTurn(role="user", content="hi"),)),
        Attribution(user_id=user_id, procedure="chat.executeAction"),
    )
    good = await down.llm.invoke(_request("gpt-4o"), Attribution(user_id=user_id, procedure="chat.executeAction"))
    assert [p.stem for p in down.llm.spool.pending()] == [str(poison.call_id), str(good.call_id)]

    up = make_services()
    assert await up.llm.spool.replay(up.llm.recorder.write) == 1
    assert [row["call_id"] for row in await _usage_rows(user_id=user_id)] == [good.call_id]
    assert up.llm.spool.pending() == []
    assert [p.stem for p in up.llm.spool.rejected.glob("*.json")] == [str(poison.call_id)]


async def test_nul_characters_are_stored_replaced_and_the_call_is_recorded(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="bad\x00reply"))
    conversation_id = uuid.uuid4()
    result = await make_services().llm.invoke(
        _request("gpt-4o", "hi\x00there"),
        Attribution(
            user_id=user_id,
            procedure="chat.sendMessage",
            conversation_id=conversation_id,
            new_conversation=True,
            conversation_title="hi\x00there",
        ),
        store=[("user", "hi\x00there")],
        store_reply=True,
    )
    assert result.recorded is True
    messages = await app_database().fetch(
        "SELECT content FROM messages WHERE conversation = $1 ORDER BY created_at", conversation_id
    )
    assert [m["content"] for m in messages] == ["hi\ufffdthere", "bad\ufffdreply"]


async def test_a_refused_call_costs_nothing_even_for_an_unknown_model(
    make_services: MakeServices, sim: RunningSimulator, user_id: uuid.UUID
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", status=400))
    with pytest.raises(LLMError):
        await make_services().llm.invoke(
            _request("gpt-99-experimental"), Attribution(user_id=user_id, procedure="chat.sendMessage")
        )
    [row] = await _usage_rows(user_id=user_id)
    assert (row["status"], row["pricing_status"], row["estimated_cost_usd"]) == ("error", "priced", 0)
