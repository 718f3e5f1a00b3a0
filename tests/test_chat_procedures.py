"""The chat procedures end to end: client, tRPC over HTTP, invoke_llm, the real SDKs, the simulator, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas import codec
from schemas.chat import (
    ClassifyIntentResult,
    Email,
    ExecuteActionInput,
    ExtractTasksResult,
    SendMessageInput,
    StreamMessageDone,
    StreamMessageInput,
    SummarizeEmailInput,
)
from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import NewUser, create_user
from tests.conftest import ServedApp, fetch_rows, serve_app, simulator_env
from tollbooth_client import TollboothClient, TRPCClientError

PROVIDERS = [("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash")]


async def _conversation(conversation_id: uuid.UUID) -> dict[str, Any]:
    [row] = await fetch_rows("SELECT * FROM conversations WHERE id = $1", conversation_id)
    return row


@pytest.mark.parametrize(("provider", "model"), PROVIDERS)
async def test_send_message_records_reply_usage_and_totals(
    client: TollboothClient, sim: RunningSimulator, alice: NewUser, provider: Any, model: str
) -> None:
    usage = (
        ScriptedUsage(input=900, cache_read=100, output=50)
        if provider == "anthropic"
        else ScriptedUsage(prompt=1000, cached=100, completion=50)
    )
    sim.state.enqueue(ScriptedResponse(provider=provider, reply="Tokens are word pieces.", usage=usage))
    out = await client.chat.send_message(SendMessageInput(message="What is a token?", model=model))

    assert out.reply == "Tokens are word pieces."
    assert out.provider == provider
    assert (out.usage.input, out.usage.cache_read, out.usage.output) == (900, 100, 50)
    assert out.pricing_status == "priced"
    assert out.cost_usd is not None
    assert out.cost_usd > 0
    assert out.conversation_id is not None
    assert out.conversation is not None
    assert out.conversation.total_cost_usd == out.cost_usd
    assert (out.conversation.total_tokens_used, out.conversation.llm_calls) == (1050, 1)

    [row] = await fetch_rows("SELECT * FROM ai_usage_logs WHERE conversation_id = $1", out.conversation_id)
    assert row["procedure"] == "chat.sendMessage"
    assert row["user_id"] == alice.id
    assert row["message_id"] == out.message_id
    assert row["estimated_cost_usd"] == out.cost_usd
    conversation = await _conversation(out.conversation_id)
    assert conversation["owner"] == alice.id
    assert conversation["title"] == "What is a token?"
    distribution = json.loads(conversation["model_distribution"])
    assert distribution == {
        model: {"calls": 1, "unpriced": 0, "tokens": 1050, "cost_usd": distribution[model]["cost_usd"]}
    }
    assert Decimal(distribution[model]["cost_usd"]) == conversation["total_cost_usd"]
    messages = await fetch_rows(
        "SELECT role, content FROM messages WHERE conversation = $1 ORDER BY created_at", out.conversation_id
    )
    assert messages == [
        {"role": "user", "content": "What is a token?"},
        {"role": "assistant", "content": "Tokens are word pieces."},
    ]


async def test_a_conversation_sends_its_history_and_accumulates_totals(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    first = await client.chat.send_message(SendMessageInput(message="My name is Ada.", model="gpt-4o"))
    second = await client.chat.send_message(
        SendMessageInput(message="What is my name?", conversation_id=first.conversation_id, model="claude-haiku-4-5")
    )
    assert second.conversation_id == first.conversation_id
    sent = sim.state.requests_to("anthropic")[-1].body["messages"]
    assert [m["content"] for m in sent] == ["My name is Ada.", first.reply, "What is my name?"]
    assert second.conversation is not None
    assert second.conversation.llm_calls == 2
    assert first.cost_usd is not None
    assert second.cost_usd is not None
    assert second.conversation.total_cost_usd == first.cost_usd + second.cost_usd
    conversation = await _conversation(first.conversation_id)  # type: ignore[arg-type]
    assert set(json.loads(conversation["model_distribution"])) == {"gpt-4o", "claude-haiku-4-5"}


async def test_a_follow_up_without_a_model_continues_on_the_model_of_the_conversation_s_last_reply(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    # The provider reports a dated snapshot; the conversation goes on with the name the caller chose.
    sim.state.enqueue(ScriptedResponse(provider="anthropic", model="claude-haiku-4-5-20251001"))
    first = await client.chat.send_message(SendMessageInput(message="My name is Ada.", model="claude-haiku-4-5"))
    conversation_id = first.conversation_id
    # Neither a failed call on another model nor an action on another model in the conversation is a reply.
    sim.state.enqueue(ScriptedResponse(provider="openai", status=500))
    with pytest.raises(TRPCClientError):
        await client.chat.send_message(
            SendMessageInput(message="Hello?", conversation_id=conversation_id, model="gpt-4o")
        )
    reply = {"action": "classify_intent", "intent": "other", "confidence": 0.5, "rationale": "none"}
    sim.state.enqueue(ScriptedResponse(provider="gemini", reply=json.dumps(reply)))
    await client.chat.execute_action(
        ExecuteActionInput(
            action="classify_intent", text="Hi", conversation_id=conversation_id, model="gemini-2.5-flash"
        )
    )

    second = await client.chat.send_message(
        SendMessageInput(message="What is my name?", conversation_id=conversation_id)
    )
    assert second.provider == "anthropic"
    assert sim.state.requests_to("anthropic")[-1].body["model"] == "claude-haiku-4-5"
    follow_up = StreamMessageInput(request_id=uuid.uuid4(), message="And mine?", conversation_id=conversation_id)
    async with client.chat.stream_message(follow_up) as events:
        [*_, done] = [event async for event in events]
    assert isinstance(done, StreamMessageDone)
    assert done.provider == "anthropic"
    assert len(sim.state.requests_to("anthropic")) == 3

    # A model named switches the conversation, and the next follow-up stays on it.
    await client.chat.send_message(SendMessageInput(message="Switch", conversation_id=conversation_id, model="gpt-4o"))
    third = await client.chat.send_message(SendMessageInput(message="Still there?", conversation_id=conversation_id))
    assert third.provider == "openai"
    assert sim.state.requests_to("openai")[-1].body["model"] == "gpt-4o"


async def test_a_new_conversation_without_a_model_starts_on_the_default_model(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    out = await client.chat.send_message(SendMessageInput(message="hi"))
    assert out.provider == "openai"
    [request] = sim.state.requests_to("openai")
    assert request.body["model"] == "gpt-4o-mini"


async def test_with_usage_logging_off_a_follow_up_without_a_model_uses_the_default_model(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path
) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), ENABLE_USAGE_LOGGING="false"))
    async with (
        serve_app(settings) as served,
        TollboothClient(served.url, api_key=alice.api_key, batching=False) as client,
    ):
        first = await client.chat.send_message(SendMessageInput(message="hi", model="claude-haiku-4-5"))
        second = await client.chat.send_message(
            SendMessageInput(message="again", conversation_id=first.conversation_id)
        )
    assert second.provider == "openai"  # no usage row says which model answered: documented in the README


@pytest.mark.parametrize(("provider", "model"), PROVIDERS)
async def test_execute_action_returns_a_typed_result_and_logs_the_action(
    client: TollboothClient, sim: RunningSimulator, provider: Any, model: str
) -> None:
    reply = {"action": "classify_intent", "intent": "scheduling", "confidence": 0.9, "rationale": "asks for a time"}
    sim.state.enqueue(ScriptedResponse(provider=provider, reply=json.dumps(reply)))
    out = await client.chat.execute_action(
        ExecuteActionInput(action="classify_intent", text="Can we meet on Tuesday?", model=model)
    )
    assert out.result == ClassifyIntentResult(intent="scheduling", confidence=0.9, rationale="asks for a time")
    assert out.conversation is None
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs WHERE procedure = 'chat.executeAction'")
    assert row["conversation_id"] is None
    assert json.loads(row["metadata"]) == {
        "task": "action",
        "action": "classify_intent",
        "schema_version": 1,
        "attempt": 1,
        "output_valid": True,
        "intent": "scheduling",
    }
    [request] = sim.state.requests_to(provider)
    assert "Tuesday" in json.dumps(request.body)


async def test_an_invalid_answer_is_asked_again_once_and_both_attempts_are_costed(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(
        ScriptedResponse(
            provider="openai", reply="Sure! Here are the tasks: none", usage=ScriptedUsage(prompt=100, completion=10)
        ),
        ScriptedResponse(
            provider="openai", reply='```json\n{"tasks": []}\n```', usage=ScriptedUsage(prompt=150, completion=5)
        ),
    )
    out = await client.chat.execute_action(
        ExecuteActionInput(action="extract_tasks", text="Nothing to do today.", model="gpt-4o")
    )
    assert out.result == ExtractTasksResult(tasks=[])
    assert out.llm_calls == 2
    assert out.usage.reported.prompt_tokens == 250
    rows = await fetch_rows("SELECT estimated_cost_usd, metadata FROM ai_usage_logs ORDER BY created_at")
    labels = [json.loads(r["metadata"]) for r in rows]
    assert [(m["attempt"], m["output_valid"]) for m in labels] == [(1, False), (2, True)]
    assert out.cost_usd == sum(r["estimated_cost_usd"] for r in rows)


async def test_two_invalid_answers_are_a_bad_gateway_and_both_are_recorded(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(*[ScriptedResponse(provider="openai", reply="not json")] * 2)
    with pytest.raises(TRPCClientError) as raised:
        await client.chat.execute_action(ExecuteActionInput(action="draft_reply", text="Hi!", model="gpt-4o"))
    assert raised.value.code == "BAD_GATEWAY"
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) == 2


@pytest.mark.parametrize(("provider", "model"), PROVIDERS)
async def test_summarize_email_never_writes_the_email_to_logs(
    client: TollboothClient, sim: RunningSimulator, provider: Any, model: str
) -> None:
    secret_body = "The merger with Initech closes on Friday; keep it quiet."
    summary = {"summary": "A merger closes Friday.", "key_points": ["merger"], "action_items": ["keep quiet"]}
    first = await client.chat.send_message(SendMessageInput(message="hello", model=model))
    sim.state.enqueue(ScriptedResponse(provider=provider, reply=json.dumps(summary)))
    out = await client.chat.summarize_email(
        SummarizeEmailInput(
            email=Email(body=secret_body, subject="Confidential", from_="ceo@example.com"),
            conversation_id=first.conversation_id,
            model=model,
        )
    )
    assert (out.summary, out.key_points, out.action_items) == ("A merger closes Friday.", ["merger"], ["keep quiet"])
    assert out.conversation is not None
    assert out.conversation.llm_calls == 2
    rows = await fetch_rows("SELECT * FROM ai_usage_logs WHERE procedure = 'chat.summarizeEmail'")
    assert len(rows) == 1
    assert "Initech" not in str(rows)
    assert "Confidential" not in str(rows)
    assert "Initech" not in str(await fetch_rows("SELECT * FROM messages"))
    assert "Initech" in json.dumps(sim.state.requests_to(provider)[-1].body)


async def test_another_users_conversation_is_not_found(app_server: ServedApp, client: TollboothClient) -> None:
    mine = await client.chat.send_message(SendMessageInput(message="private", model="gpt-4o"))
    bob = await create_user("bob")
    async with TollboothClient(app_server.url, api_key=bob.api_key, batching=False) as as_bob:
        for call in (
            as_bob.chat.send_message(SendMessageInput(message="peek", conversation_id=mine.conversation_id)),
            as_bob.chat.execute_action(
                ExecuteActionInput(action="draft_reply", text="x", conversation_id=mine.conversation_id)
            ),
            as_bob.chat.send_message(SendMessageInput(message="peek", conversation_id=uuid.uuid4())),
        ):
            with pytest.raises(TRPCClientError) as raised:
                await call
            assert (raised.value.code, raised.value.http_status) == ("NOT_FOUND", 404)
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) == 1


async def test_calls_without_a_valid_key_are_unauthorized(app_server: ServedApp, db: None) -> None:
    for key in (None, "tb_not-a-real-key"):
        async with TollboothClient(app_server.url, api_key=key, batching=False) as anonymous:
            with pytest.raises(TRPCClientError) as raised:
                await anonymous.chat.send_message(SendMessageInput(message="hi"))
            assert (raised.value.code, raised.value.http_status) == ("UNAUTHORIZED", 401)
    assert await fetch_rows("SELECT 1 FROM ai_usage_logs") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": ""}, "$.message"),
        ({"message": "hi", "temperature": 3}, "$.temperature"),
        ({"message": "hi", "maxTokens": "many"}, "$.maxTokens"),
        ({"message": "hi", "modle": "gpt-4o"}, "modle"),
        ({"message": "hi", "conversationId": "not-a-uuid"}, "$.conversationId"),
        ({"message": "hi", "model": "llama-3"}, "llama-3"),
    ],
)
async def test_bad_input_is_a_bad_request_naming_the_field_and_writes_nothing(
    app_server: ServedApp, alice: NewUser, body: dict[str, Any], field: str
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=app_server.url) as http:
        response = await http.post(
            "/trpc/chat.sendMessage", json=body, headers={"authorization": f"Bearer {alice.api_key}"}
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["data"]["code"] == "BAD_REQUEST"
    assert field in error["message"]
    assert await fetch_rows("SELECT 1 FROM ai_usage_logs") == []
    assert await fetch_rows("SELECT 1 FROM conversations") == []


@pytest.mark.parametrize(
    ("status", "code", "http_status"), [(429, "TOO_MANY_REQUESTS", 429), (500, "BAD_GATEWAY", 502)]
)
async def test_a_provider_error_reaches_the_client_with_its_code(
    client: TollboothClient, sim: RunningSimulator, status: int, code: str, http_status: int
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", status=status, retry_after=0))
    with pytest.raises(TRPCClientError) as raised:
        await client.chat.send_message(SendMessageInput(message="hi", model="gpt-4o"))
    assert (raised.value.code, raised.value.http_status) == (code, http_status)
    [row] = await fetch_rows("SELECT status, conversation_id FROM ai_usage_logs")
    assert row == {"status": "error", "conversation_id": None}
    assert await fetch_rows("SELECT 1 FROM conversations") == []


async def test_concurrent_messages_on_one_conversation_lose_no_update(
    app_server: ServedApp, client: TollboothClient, sim: RunningSimulator, alice: NewUser
) -> None:
    calls = 100
    models = ["gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash", "gpt-4o-mini"]
    first = await client.chat.send_message(SendMessageInput(message="start", model="gpt-4o"))
    conversation_id = first.conversation_id
    for i in range(calls):  # distinct, awkward usage numbers so that a lost update cannot cancel out
        sim.state.enqueue(
            ScriptedResponse(provider="openai", usage=ScriptedUsage(prompt=1000 + i, cached=i * 3, completion=7 + i)),
            ScriptedResponse(
                provider="anthropic",
                usage=ScriptedUsage(input=500 + i, cache_read=11 * i, cache_write_5m=i, output=13 + i),
            ),
            ScriptedResponse(
                provider="gemini", usage=ScriptedUsage(prompt=2000 + i, cached=i, completion=5, thoughts=i)
            ),
        )
    async with TollboothClient(app_server.url, api_key=alice.api_key, batching=False) as parallel:
        outputs = await asyncio.gather(
            *(
                parallel.chat.send_message(
                    SendMessageInput(message=f"message {i}", conversation_id=conversation_id, model=models[i % 4])
                )
                for i in range(calls)
            )
        )
    returned_cost = sum((o.cost_usd for o in outputs if o.cost_usd is not None), first.cost_usd or Decimal(0))
    [sums] = await fetch_rows(
        """SELECT count(*) AS calls, sum(estimated_cost_usd) AS cost,
                  sum(input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens) AS prompt,
                  sum(output_tokens) AS completion
           FROM ai_usage_logs WHERE conversation_id = $1""",
        conversation_id,
    )
    conversation = await _conversation(conversation_id)  # type: ignore[arg-type]
    assert sums["calls"] == conversation["llm_calls"] == calls + 1
    assert conversation["total_cost_usd"] == sums["cost"] == returned_cost
    assert conversation["total_prompt_tokens"] == sums["prompt"]
    assert conversation["total_completion_tokens"] == sums["completion"]
    assert conversation["total_tokens_used"] == sums["prompt"] + sums["completion"]
    distribution = json.loads(conversation["model_distribution"])
    assert sum(entry["calls"] for entry in distribution.values()) == calls + 1
    assert sum(Decimal(entry["cost_usd"]) for entry in distribution.values()) == sums["cost"]
    assert max(o.conversation.llm_calls for o in outputs if o.conversation) == calls + 1
    [messages] = await fetch_rows("SELECT count(*) AS n FROM messages WHERE conversation = $1", conversation_id)
    assert messages["n"] == 2 * (calls + 1)
    assert codec.encoder().encode(first)  # outputs encode back to the wire
