"""chat.streamMessage end to end (Python client, tRPC over SSE, LLMCore.stream, the real SDKs streaming from the
simulator, PostgreSQL), and LLMCore.stream on its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
import pytest

from schemas.chat import (
    STREAM_MESSAGE_MAX_LENGTH,
    STREAM_SYSTEM_PROMPT_MAX_LENGTH,
    SendMessageInput,
    StreamMessageDelta,
    StreamMessageDone,
    StreamMessageInput,
)
from server.admin.consistency import check_totals
from server.database import Database
from server.errors import DatabaseUnavailableError, LLMError, LLMFailure
from server.llm.core import Attribution, LLMCore, LLMResult
from server.llm.providers import (
    ChatTurn,
    Completion,
    CompletionRequest,
    ProviderName,
    ProviderSet,
    StreamChunk,
    TextDelta,
)
from server.llm.usage import estimate_usage
from server.rpc.errors import to_trpc_error
from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import NewUser, create_user
from tests.conftest import MakeServices, ServedApp, app_database, fetch_rows, serve_app, simulator_env
from tollbooth_client import TollboothClient, TRPCClientError

REPLY = "Tokens are the word pieces a model reads and writes."
PROVIDERS = [("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash")]

# Per provider: scripted usage with every bucket the provider has, what it must become, and its exact cost.
# OpenAI: prompt 1000 includes 200 cached; completion 120 includes 40 reasoning.
#   gpt-4o: 800 x 2.50 + 200 x 1.25 + 120 x 10 = 3450 per million.
# Anthropic: message_start reports output 1, message_delta the cumulative 150: summing would make 151.
#   claude-haiku-4-5: 900 x 1 + 400 x 1.25 + 200 x 2 + 3000 x 0.10 + 150 x 5 = 2850 per million.
# Gemini: every chunk repeats the cumulative usage; completion 80 leaves out 120 thinking tokens.
#   gemini-2.5-flash: 1500 x 0.30 + 500 x 0.03 + 200 x 2.50 = 965 per million.
SCRIPTED = {
    "openai": (
        ScriptedUsage(prompt=1000, cached=200, completion=120, reasoning=40),
        {"input": 800, "cacheRead": 200, "cacheWrite5m": 0, "cacheWrite1h": 0, "output": 120, "reasoning": 40},
        (1000, 120, 1120),
        Decimal("0.00345"),
    ),
    "anthropic": (
        ScriptedUsage(input=900, cache_write_5m=400, cache_write_1h=200, cache_read=3000, output=150),
        {"input": 900, "cacheRead": 3000, "cacheWrite5m": 400, "cacheWrite1h": 200, "output": 150, "reasoning": 0},
        (4500, 150, 4650),
        Decimal("0.00285"),
    ),
    "gemini": (
        ScriptedUsage(prompt=2000, cached=500, completion=80, thoughts=120),
        {"input": 1500, "cacheRead": 500, "cacheWrite5m": 0, "cacheWrite1h": 0, "output": 200, "reasoning": 120},
        (2000, 80, 2200),
        Decimal("0.000965"),
    ),
}
_USAGE_FIELDS = {
    "input": "input",
    "cacheRead": "cache_read",
    "cacheWrite5m": "cache_write_5m",
    "cacheWrite1h": "cache_write_1h",
    "output": "output",
    "reasoning": "reasoning",
}
ROW_BUCKETS = {
    "input": "input_tokens",
    "cacheRead": "cache_read_tokens",
    "cacheWrite5m": "cache_write_5m_tokens",
    "cacheWrite1h": "cache_write_1h_tokens",
    "output": "output_tokens",
    "reasoning": "reasoning_tokens",
}

Event = StreamMessageDelta | StreamMessageDone
T = TypeVar("T")


async def _collect(events: AsyncIterator[T], into: list[T]) -> None:
    async for event in events:
        into.append(event)


def _split(events: list[Event]) -> tuple[str, StreamMessageDone]:
    """The text of the deltas, and the done event, which must come last and once."""
    *deltas, done = events
    assert isinstance(done, StreamMessageDone)
    assert all(isinstance(delta, StreamMessageDelta) for delta in deltas)
    return "".join(delta.text for delta in deltas if isinstance(delta, StreamMessageDelta)), done


async def _assert_totals_are_the_sums_of_rows(conversation_id: uuid.UUID) -> dict[str, Any]:
    """`python -m server check-totals`: every conversation's totals (and the rollup) equal the sums of its rows."""
    report = await check_totals(app_database())
    assert report.consistent, (report.differences, report.rollup_differences)
    [conversation] = await fetch_rows("SELECT * FROM conversations WHERE id = $1", conversation_id)
    [sums] = await fetch_rows(
        "SELECT count(*) AS calls, sum(estimated_cost_usd) AS cost FROM ai_usage_logs WHERE conversation_id = $1",
        conversation_id,
    )
    assert (conversation["llm_calls"], conversation["total_cost_usd"]) == (sums["calls"], sums["cost"])
    return conversation


@pytest.mark.parametrize(("provider", "model"), PROVIDERS)
async def test_deltas_make_the_reply_and_done_reports_exactly_what_was_recorded(
    client: TollboothClient, sim: RunningSimulator, alice: NewUser, provider: Any, model: str
) -> None:
    scripted, buckets, (prompt_tokens, completion_tokens, total_tokens), cost = SCRIPTED[provider]
    sim.state.enqueue(ScriptedResponse(provider=provider, reply=REPLY, usage=scripted))
    events: list[Event] = []
    await _collect(
        client.chat.stream_message(
            StreamMessageInput(request_id=uuid.uuid4(), message="What is a token?", model=model)
        ),
        events,
    )

    text, done = _split(events)
    assert len(events) > 5, "the reply arrives in pieces"
    assert text == done.reply == REPLY
    usage = done.usage
    assert {key: getattr(usage, field) for key, field in _USAGE_FIELDS.items()} == buckets
    assert (usage.reported.prompt_tokens, usage.reported.completion_tokens, usage.reported.total_tokens) == (
        prompt_tokens,
        completion_tokens,
        total_tokens,
    )
    assert usage.estimated is False
    assert (done.cost_usd, done.pricing_status, done.provider, done.llm_calls) == (cost, "priced", provider, 1)
    assert done.conversation is not None
    assert (done.conversation.total_cost_usd, done.conversation.llm_calls) == (cost, 1)
    assert done.conversation.total_tokens_used == sum(buckets.values()) - buckets["reasoning"]

    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    assert (row["procedure"], row["status"], row["usage_estimated"]) == ("chat.streamMessage", "ok", False)
    assert (row["user_id"], row["conversation_id"], row["message_id"]) == (
        alice.id,
        done.conversation_id,
        done.message_id,
    )
    assert {key: row[column] for key, column in ROW_BUCKETS.items()} == buckets
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        prompt_tokens,
        completion_tokens,
        total_tokens,
    )
    assert row["estimated_cost_usd"] == cost
    assert done.conversation_id is not None
    conversation = await _assert_totals_are_the_sums_of_rows(done.conversation_id)
    assert conversation["title"] == "What is a token?"
    messages = await fetch_rows(
        "SELECT id, role, content FROM messages WHERE conversation = $1 ORDER BY created_at", done.conversation_id
    )
    assert [(m["role"], m["content"]) for m in messages] == [("user", "What is a token?"), ("assistant", REPLY)]
    assert messages[1]["id"] == done.message_id
    [request] = sim.state.requests_to(provider)
    assert request.body["stream"] is True


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_chat_completions_streams_ask_for_usage(
    client: TollboothClient, sim: RunningSimulator, provider: str
) -> None:
    model = dict(PROVIDERS)[provider]
    await _collect(
        client.chat.stream_message(
            StreamMessageInput(request_id=uuid.uuid4(), message="hi", model=model, max_tokens=50)
        ),
        [],
    )
    [request] = sim.state.requests_to(provider)  # type: ignore[arg-type]
    assert request.body["stream_options"] == {"include_usage": True}


async def test_a_stream_continues_a_conversation_with_its_history(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    first = await client.chat.send_message(SendMessageInput(message="My name is Ada.", model="gpt-4o"))
    events: list[Event] = []
    follow_up = StreamMessageInput(
        request_id=uuid.uuid4(), message="What is my name?", conversation_id=first.conversation_id, model="gpt-4o"
    )
    await _collect(client.chat.stream_message(follow_up), events)
    _, done = _split(events)
    assert done.conversation_id == first.conversation_id
    sent = sim.state.requests_to("openai")[-1].body["messages"]
    assert [m["content"] for m in sent] == ["My name is Ada.", first.reply, "What is my name?"]
    assert done.conversation is not None
    assert done.conversation.llm_calls == 2
    assert first.conversation_id is not None
    await _assert_totals_are_the_sums_of_rows(first.conversation_id)
    assert len(await fetch_rows("SELECT 1 FROM messages")) == 4


@pytest.mark.parametrize(("provider", "model"), PROVIDERS)
async def test_a_stream_broken_before_usage_is_an_error_event_and_an_estimated_error_row(
    client: TollboothClient, sim: RunningSimulator, provider: Any, model: str
) -> None:
    first = await client.chat.send_message(SendMessageInput(message="Hello", model=model))
    assert first.conversation_id is not None
    sim.state.enqueue(ScriptedResponse(provider=provider, reply=REPLY, stream_break_after=3))
    received: list[Event] = []
    follow_up = StreamMessageInput(
        request_id=uuid.uuid4(), message="Explain tokens.", conversation_id=first.conversation_id, model=model
    )
    with pytest.raises(TRPCClientError) as raised:
        await _collect(client.chat.stream_message(follow_up), received)

    # A broken connection is BAD_GATEWAY for chat.sendMessage; a stream must not be retried, so not -32603.
    assert (raised.value.code, raised.value.http_status) == ("UNPROCESSABLE_CONTENT", 422)
    assert "could not reach" in str(raised.value)
    text = "".join(event.text for event in received if isinstance(event, StreamMessageDelta))
    assert text == "Tokens are the "
    assert len(sim.state.requests_to(provider)) == 2, "the client did not reconnect, nothing was sent again"

    [row] = await fetch_rows("SELECT * FROM ai_usage_logs WHERE procedure = 'chat.streamMessage'")
    assert (row["status"], row["usage_estimated"], row["conversation_id"]) == ("error", True, first.conversation_id)
    prompt_chars = len("Hello") + len(first.reply) + len("Explain tokens.")
    estimate = estimate_usage(prompt_chars, len(text))
    assert (row["input_tokens"], row["output_tokens"]) == (estimate.input, estimate.output)
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0
    assert row["estimated_cost_usd"] > 0
    conversation = await _assert_totals_are_the_sums_of_rows(first.conversation_id)
    assert conversation["llm_calls"] == 2
    messages = await fetch_rows("SELECT content FROM messages")
    assert len(messages) == 2, "the conversation holds no half reply, nor the message that got none"


async def test_a_broken_stream_in_a_new_conversation_creates_no_conversation(
    client: TollboothClient, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="anthropic", reply=REPLY, stream_break_after=1))
    with pytest.raises(TRPCClientError):
        await _collect(
            client.chat.stream_message(
                StreamMessageInput(request_id=uuid.uuid4(), message="hi", model="claude-haiku-4-5")
            ),
            [],
        )
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    assert (row["status"], row["usage_estimated"], row["conversation_id"]) == ("error", True, None)
    assert row["user_id"] == alice.id
    assert row["error_type"] == "RemoteProtocolError"
    assert await fetch_rows("SELECT 1 FROM conversations") == []


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ({"status": 429, "retry_after": 0}, "TOO_MANY_REQUESTS"),
        ({"status": 500}, "UNPROCESSABLE_CONTENT"),
        ({"status": 503}, "UNPROCESSABLE_CONTENT"),
        ({"malformed": True}, "UNPROCESSABLE_CONTENT"),
        ({"delay_ms": 1500}, "TIMEOUT"),
    ],
)
async def test_a_provider_failure_ends_the_stream_with_a_code_the_client_does_not_retry(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path, script: dict[str, Any], code: str
) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), PROVIDER_TIMEOUT_SECONDS="1"))
    sim.state.enqueue(ScriptedResponse(provider="openai", **script))
    async with (
        serve_app(settings) as served,
        TollboothClient(served.url, api_key=alice.api_key, subscription_reconnect_delay=0.01) as client,
    ):
        with pytest.raises(TRPCClientError) as raised:
            await _collect(
                client.chat.stream_message(StreamMessageInput(request_id=uuid.uuid4(), message="hi", model="gpt-4o")),
                [],
            )
    assert raised.value.code == code
    assert len(sim.state.requests_to("openai")) == 1
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    assert row["status"] == "error"
    # A refused request is not billed (nothing estimated); a malformed stream had begun, so it is.
    assert row["usage_estimated"] is bool(script.get("malformed"))


async def test_a_client_that_disconnects_mid_stream_leaves_a_cancelled_estimated_row(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    long_reply = "word " * 30_000
    sim.state.enqueue(ScriptedResponse(provider="openai", reply=long_reply))
    events = client.chat.stream_message(
        StreamMessageInput(request_id=uuid.uuid4(), message="Write a lot.", model="gpt-4o")
    )
    first = await anext(events)
    await events.aclose()
    assert first == StreamMessageDelta(text="word ")

    rows: list[dict[str, Any]] = []
    for _ in range(100):
        rows = await fetch_rows("SELECT * FROM ai_usage_logs")
        if rows:
            break
        await asyncio.sleep(0.05)
    [row] = rows
    assert (row["status"], row["error_type"], row["usage_estimated"]) == ("cancelled", "Cancelled", True)
    assert row["input_tokens"] == estimate_usage(len("Write a lot."), 0).input
    assert 0 < row["output_tokens"] < estimate_usage(0, len(long_reply)).output
    assert row["conversation_id"] is None
    assert await fetch_rows("SELECT 1 FROM conversations") == []
    assert await fetch_rows("SELECT 1 FROM messages") == []


def _stream_url(api_key: str, input: dict[str, Any]) -> str:
    """The URL @trpc/client's httpSubscriptionLink opens: JSON through ``encodeURIComponent``, the key in
    connectionParams (an EventSource sends no headers). Its reconnects open this exact URL again."""

    def component(value: dict[str, Any]) -> str:
        return quote(json.dumps(value, ensure_ascii=False, separators=(",", ":")), safe="-_.!~*'()")

    return f"/trpc/chat.streamMessage?connectionParams={component({'apiKey': api_key})}&input={component(input)}"


def _sse_blocks(response: httpx.Response) -> list[str]:
    return [block for block in response.text.split("\n\n\n") if block]


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``serialized-error`` event's shape (a subscription's errors come as an event after ``connected``)."""
    block = next(block for block in _sse_blocks(response) if block.startswith("event: serialized-error"))
    shape: dict[str, Any] = json.loads(block.split("data: ", 1)[1])
    return shape


async def test_the_same_url_again_replays_the_finished_stream_and_calls_no_model(
    app_server: ServedApp, sim: RunningSimulator, alice: NewUser
) -> None:
    """What protects @trpc/client users: after a dropped connection its EventSource opens the same URL again, with
    or without ``Last-Event-ID`` (none when the connection dropped before any id), so with the same requestId."""
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="one two"))
    url = _stream_url(alice.api_key, {"requestId": str(uuid.uuid4()), "message": "hi", "model": "gpt-4o"})
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        response = await http.get(url)
        blocks = _sse_blocks(response)
        # Plain untracked events, as @trpc/server sends them: no `id:` that an EventSource would send back.
        assert blocks[:3] == [
            "event: connected\ndata: {}",
            'data: {"type":"delta","text":"one "}',
            'data: {"type":"delta","text":"two"}',
        ]
        assert blocks[3].startswith('data: {"type":"done",')
        assert blocks[4:] == ["event: return\ndata: "]
        assert "\nid:" not in response.text

        again = await http.get(url)
        with_id = await http.get(url, headers={"last-event-id": "anything"})
    done = json.loads(blocks[3].split("data: ", 1)[1])
    for replayed in (again, with_id):
        replay = _sse_blocks(replayed)
        assert replay[:2] == ["event: connected\ndata: {}", 'data: {"type":"delta","text":"one two"}']
        assert json.loads(replay[2].split("data: ", 1)[1]) == {**done, "fromIdempotentCache": True}
        assert replay[3:] == ["event: return\ndata: "]
    assert len(sim.state.requests_to("openai")) == 1, "the repeated requests sent nothing to the provider"
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) == 1
    assert len(await fetch_rows("SELECT 1 FROM messages")) == 2


async def test_a_second_subscription_with_the_same_finished_request_id_replays_it(
    client: TollboothClient, sim: RunningSimulator, alice: NewUser
) -> None:
    ask = StreamMessageInput(request_id=uuid.uuid4(), message="What is a token?", model="gpt-4o")
    events: list[Event] = []
    await _collect(client.chat.stream_message(ask), events)
    _, done = _split(events)

    replayed: list[Event] = []
    await _collect(client.chat.stream_message(ask), replayed)
    assert replayed == [StreamMessageDelta(text=done.reply), msgspec.structs.replace(done, from_idempotent_cache=True)]
    # The same message with a new requestId is a new message, sent and billed again.
    await _collect(client.chat.stream_message(msgspec.structs.replace(ask, request_id=uuid.uuid4())), [])
    assert len(sim.state.requests_to("openai")) == 2
    claims = await fetch_rows("SELECT user_id, request_id FROM stream_requests ORDER BY created_at")
    assert claims[0] == {"user_id": alice.id, "request_id": ask.request_id}
    assert len(claims) == 2
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs WHERE procedure = 'chat.streamMessage'")) == 2
    assert done.conversation is not None


async def test_concurrent_subscriptions_with_one_request_id_call_the_model_once(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", reply=REPLY, delay_ms=300))
    ask = StreamMessageInput(request_id=uuid.uuid4(), message="hi", model="gpt-4o")
    outcomes = await asyncio.gather(
        *(_collect(client.chat.stream_message(ask), []) for _ in range(5)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, TRPCClientError)]
    assert len(refused) == 4, outcomes
    assert {error.code for error in refused} == {"CONFLICT"}
    assert len(sim.state.requests_to("openai")) == 1


async def test_another_user_is_not_blocked_by_the_same_request_id(
    app_server: ServedApp, client: TollboothClient, sim: RunningSimulator, alice: NewUser
) -> None:
    request_id = uuid.uuid4()
    bob = await create_user("bob")
    async with TollboothClient(app_server.url, api_key=bob.api_key) as as_bob:
        # Bob uses the id first (say he saw it): Alice's message with it still runs, once.
        await _collect(as_bob.chat.stream_message(StreamMessageInput(request_id=request_id, message="bob's")), [])
    events: list[Event] = []
    await _collect(client.chat.stream_message(StreamMessageInput(request_id=request_id, message="alice's")), events)
    _, done = _split(events)
    assert done.reply
    with pytest.raises(TRPCClientError) as raised:
        await _collect(client.chat.stream_message(StreamMessageInput(request_id=request_id, message="again")), [])
    assert raised.value.code == "CONFLICT"
    assert len(sim.state.requests_to("openai")) == 2
    claims = await fetch_rows("SELECT user_id FROM stream_requests WHERE request_id = $1", request_id)
    assert sorted(str(row["user_id"]) for row in claims) == sorted(str(user.id) for user in (alice, bob))


@pytest.mark.parametrize(
    ("field", "input"),
    [
        ("message", {"message": "x" * (STREAM_MESSAGE_MAX_LENGTH + 1)}),
        ("systemPrompt", {"message": "hi", "systemPrompt": "x" * (STREAM_SYSTEM_PROMPT_MAX_LENGTH + 1)}),
        ("requestId", {"message": "hi"}),
        ("requestId", {"message": "hi", "requestId": "run-once"}),
    ],
    ids=["message-too-long", "system-prompt-too-long", "no-request-id", "request-id-not-a-uuid"],
)
async def test_invalid_input_is_bad_request_naming_the_field_and_claims_nothing(
    app_server: ServedApp, sim: RunningSimulator, alice: NewUser, field: str, input: dict[str, Any]
) -> None:
    if field != "requestId":
        input = {"requestId": str(uuid.uuid4()), **input}
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        shape = _error_of(await http.get(_stream_url(alice.api_key, input)))
    assert shape["data"]["code"] == "BAD_REQUEST"
    assert field in shape["message"], shape["message"]  # `$.message`, or "missing required field `requestId`"
    assert sim.state.requests_to("openai") == []
    assert await fetch_rows("SELECT 1 FROM stream_requests") == []


async def test_the_longest_input_fits_in_the_url_the_server_accepts(
    app_server: ServedApp, sim: RunningSimulator, alice: NewUser
) -> None:
    """At the limits, in the characters that take most room in a URL (12 bytes each: 4 of UTF-8, percent-encoded),
    the URL stays under the HTTP server's 64 KB: the input reaches the service instead of a plain-text 400."""
    async with TollboothClient(app_server.url, api_key=alice.api_key) as client:
        first = await client.chat.send_message(SendMessageInput(message="hi", model="gpt-4o"))
    message = "\U0001f600" * STREAM_MESSAGE_MAX_LENGTH
    system_prompt = "\U0001f914" * STREAM_SYSTEM_PROMPT_MAX_LENGTH
    model = "gpt-" + "4:/" * 65 + "o"  # 200 characters, ':' and '/' percent-encoded
    url = _stream_url(
        alice.api_key,
        {
            "requestId": str(uuid.uuid4()),
            "message": message,
            "conversationId": str(first.conversation_id),
            "model": model,
            "systemPrompt": system_prompt,
            "maxTokens": 65_536,
            "temperature": 1.2345678901234567,
        },
    )
    assert 60_000 < len(url) < 64_000
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        response = await http.get(url)
    assert response.headers["content-type"].startswith("text/event-stream"), response.text
    assert 'data: {"type":"done"' in response.text, response.text[-500:]
    sent = sim.state.requests_to("openai")[-1].body
    assert sent["model"] == model
    assert sent["messages"][0] == {"role": "system", "content": system_prompt}
    assert sent["messages"][-1] == {"role": "user", "content": message}


async def test_another_users_conversation_is_not_found(
    app_server: ServedApp, client: TollboothClient, sim: RunningSimulator
) -> None:
    mine = await client.chat.send_message(SendMessageInput(message="private", model="gpt-4o"))
    bob = await create_user("bob")
    async with TollboothClient(app_server.url, api_key=bob.api_key) as as_bob:
        peek = StreamMessageInput(request_id=uuid.uuid4(), message="peek", conversation_id=mine.conversation_id)
        with pytest.raises(TRPCClientError) as raised:
            await _collect(as_bob.chat.stream_message(peek), [])
    assert (raised.value.code, raised.value.http_status) == ("NOT_FOUND", 404)
    assert len(sim.state.requests_to("openai")) == 1


# LLMCore.stream without the protocol: the real SDK over HTTP to the simulator, the real database.


def _request(model: str, text: str = "Hello there") -> CompletionRequest:
    return CompletionRequest(model=model, messages=(ChatTurn(role="user", content=text),))


def _new_conversation(user_id: uuid.UUID) -> Attribution:
    return Attribution(
        user_id=user_id,
        procedure="chat.streamMessage",
        conversation_id=uuid.uuid4(),
        new_conversation=True,
        conversation_title="t",
    )


async def test_core_stream_yields_deltas_then_the_recorded_result(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(
        ScriptedResponse(
            provider="openai", reply=REPLY, model="gpt-4o-2024-08-06", usage=ScriptedUsage(prompt=10, completion=12)
        )
    )
    events = [
        event
        async for event in make_services().llm.stream(
            _request("gpt-4o"), _new_conversation(alice.id), store=[("user", "Hello there")], store_reply=True
        )
    ]
    *deltas, result = events
    assert all(isinstance(delta, TextDelta) for delta in deltas)
    assert isinstance(result, LLMResult)
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == result.text == REPLY
    assert (result.model, result.usage.output, result.recorded) == ("gpt-4o-2024-08-06", 12, True)
    [row] = await fetch_rows("SELECT call_id, model, requested_model FROM ai_usage_logs")
    assert row == {"call_id": result.call_id, "model": "gpt-4o-2024-08-06", "requested_model": "gpt-4o"}


async def test_core_stream_closed_after_the_first_delta_records_a_cancelled_estimate(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="anthropic", reply=REPLY))
    attribution = _new_conversation(alice.id)
    stream = make_services().llm.stream(
        _request("claude-haiku-4-5", "x" * 400), attribution, store=[("user", "x" * 400)], store_reply=True
    )
    async with contextlib.aclosing(stream):
        assert await anext(stream) == TextDelta("Tokens ")
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    expected = estimate_usage(400, len("Tokens "))
    assert (row["status"], row["usage_estimated"]) == ("cancelled", True)
    assert (row["input_tokens"], row["output_tokens"]) == (expected.input, expected.output) == (100, 2)
    assert row["conversation_id"] is None
    assert await fetch_rows("SELECT 1 FROM messages") == []


async def test_core_stream_cancelled_while_waiting_for_the_provider_records_a_cancelled_estimate(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="gemini", delay_ms=2000))
    stream = make_services().llm.stream(
        _request("gemini-2.5-flash", "x" * 40), Attribution(user_id=alice.id, procedure="p")
    )

    async def consume() -> None:
        async with contextlib.aclosing(stream):
            async for _ in stream:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [row] = await fetch_rows("SELECT status, usage_estimated, input_tokens, output_tokens FROM ai_usage_logs")
    assert row == {"status": "cancelled", "usage_estimated": True, "input_tokens": 10, "output_tokens": 0}


async def test_core_stream_broken_mid_way_is_a_billable_error_with_an_estimate(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="one two three", stream_break_after=2))
    with pytest.raises(LLMError) as raised:
        await _collect(make_services().llm.stream(_request("gpt-4o"), Attribution(user_id=alice.id, procedure="p")), [])
    assert (raised.value.failure, to_trpc_error(raised.value).code, raised.value.error_type, raised.value.billable) == (
        LLMFailure.UNREACHABLE,
        "BAD_GATEWAY",
        "APIConnectionError",
        True,
    )
    [row] = await fetch_rows("SELECT status, usage_estimated, input_tokens, output_tokens FROM ai_usage_logs")
    assert row == {"status": "error", "usage_estimated": True, "input_tokens": 3, "output_tokens": 2}


async def test_without_the_database_a_stream_fails_before_calling_the_model(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, unreachable_database: Database
) -> None:
    """Its requestId cannot be claimed, so the stream could not be kept from running twice: it does not run."""
    ask = StreamMessageInput(request_id=uuid.uuid4(), message="hi", model="gpt-4o")
    with pytest.raises(DatabaseUnavailableError, match="ConnectionRefusedError"):
        await _collect(make_services(unreachable_database).chat.stream_message(alice.id, ask), [])
    assert sim.state.requests_to("openai") == []


@dataclass
class _HalfAnswer:
    """A provider stream that none of the simulated ones produces: two deltas, then no usage report but ``ending``."""

    ending: Exception | None
    name: ProviderName = "openai"

    async def complete(self, request: CompletionRequest) -> Completion:
        raise AssertionError("not called")

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        yield TextDelta("half ")
        yield TextDelta("an answer")
        if self.ending is not None:
            raise self.ending


@pytest.mark.parametrize(
    ("ending", "error_type"),
    [(None, "MissingUsage"), (RuntimeError("an error no adapter translated"), "RuntimeError")],
    ids=["ends-without-usage", "unexpected-error"],
)
async def test_core_stream_that_ends_without_a_usage_report_is_an_estimated_error(
    make_services: MakeServices, alice: NewUser, ending: Exception | None, error_type: str
) -> None:
    llm = make_services().llm
    core = LLMCore(ProviderSet({"openai": _HalfAnswer(ending)}), llm.catalogue, llm.recorder, llm.spool, llm.ledger)
    received: list[TextDelta | LLMResult] = []
    with pytest.raises(LLMError if ending is None else RuntimeError):
        await _collect(core.stream(_request("gpt-4o"), Attribution(user_id=alice.id, procedure="p")), received)
    assert received == [TextDelta("half "), TextDelta("an answer")]
    [row] = await fetch_rows("SELECT status, usage_estimated, error_type, output_tokens FROM ai_usage_logs")
    assert row == {"status": "error", "usage_estimated": True, "error_type": error_type, "output_tokens": 4}


async def test_core_stream_with_the_database_down_still_answers_and_spools_the_record(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, unreachable_database: Database
) -> None:
    down = make_services(unreachable_database)
    down.llm.ledger.hard_budgets_exist = False  # it knew no hard budget before the database went away
    sim.state.enqueue(
        ScriptedResponse(provider="openai", reply=REPLY, usage=ScriptedUsage(prompt=1000, cached=200, completion=100))
    )
    attribution = _new_conversation(alice.id)
    events = [
        event
        async for event in down.llm.stream(
            _request("gpt-4o"), attribution, store=[("user", "Hello there")], store_reply=True
        )
    ]
    result = events[-1]
    assert isinstance(result, LLMResult)
    assert (result.text, result.recorded, result.totals) == (REPLY, False, None)
    assert result.priced.total_cost == Decimal("0.00325")
    assert await fetch_rows("SELECT 1 FROM ai_usage_logs") == []

    up = make_services()
    assert await up.llm.spool.replay(up.llm.recorder.write) == 1
    [row] = await fetch_rows("SELECT call_id, estimated_cost_usd, procedure FROM ai_usage_logs")
    assert row == {
        "call_id": result.call_id,
        "estimated_cost_usd": Decimal("0.00325"),
        "procedure": "chat.streamMessage",
    }
    assert attribution.conversation_id is not None
    await _assert_totals_are_the_sums_of_rows(attribution.conversation_id)
    assert len(await fetch_rows("SELECT 1 FROM messages")) == 2
