"""The provider simulator, exercised through the official SDKs over real HTTP, as the rest of the suite uses it."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import anthropic
import httpx
import httpx2
import msgspec
import openai
import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from server.simulator import (
    INVALID_API_KEY,
    RunningSimulator,
    ScriptedResponse,
    ScriptedUsage,
    SimulatorBaseUrls,
    running_simulator,
)

T = TypeVar("T")

USER_TEXT = "Please tell me, in one short paragraph, why toll roads charge by the axle."
SYSTEM_TEXT = "You are a terse assistant."


def tokens(text: str) -> int:
    """The simulator's documented estimate, restated independently."""
    return math.ceil(len(text) / 4)


def default_reply(user_text: str) -> str:
    return "Simulated reply to: " + user_text[:60]


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with running_simulator() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_state(simulator: RunningSimulator) -> None:
    simulator.state.reset()


@pytest.fixture
async def openai_client(simulator: RunningSimulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=simulator.base_urls.openai, api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
async def gemini_client(simulator: RunningSimulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=simulator.base_urls.gemini, api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
async def anthropic_client(simulator: RunningSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=simulator.base_urls.anthropic, api_key="sk-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def control(simulator: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.origin) as client:
        yield client


def chat_messages(user_text: str = USER_TEXT) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": SYSTEM_TEXT}, {"role": "user", "content": user_text}]


async def collect_chunks(stream: openai.AsyncStream[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


async def drain_into(stream: AsyncIterable[T], received: list[T]) -> None:
    """Keep what arrived before a stream fails, so a test can assert on both."""
    async for item in stream:
        received.append(item)


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)


# Base URLs


def test_base_urls_have_the_form_each_sdk_appends_its_path_to() -> None:
    urls = SimulatorBaseUrls.for_origin("http://127.0.0.1:9999/")

    assert urls.openai == "http://127.0.0.1:9999/openai/v1"
    assert urls.anthropic == "http://127.0.0.1:9999/anthropic"
    assert urls.gemini == "http://127.0.0.1:9999/gemini/v1beta/openai/"


# Default replies and usage


async def test_openai_default_reply_and_usage_are_derived_from_the_text(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())

    reply = default_reply(USER_TEXT)
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == reply
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == tokens(SYSTEM_TEXT) + tokens(USER_TEXT)
    assert usage.completion_tokens == tokens(reply)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


async def test_openai_stream_sends_usage_only_in_a_final_chunk_without_choices(
    openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=chat_messages(), stream=True, stream_options={"include_usage": True}
    )
    chunks = await collect_chunks(stream)

    reply = default_reply(USER_TEXT)
    assert streamed_text(chunks) == reply
    assert len(chunks) > 3
    assert all(chunk.usage is None for chunk in chunks[:-1])
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.prompt_tokens == tokens(SYSTEM_TEXT) + tokens(USER_TEXT)
    assert final.usage.completion_tokens == tokens(reply)
    assert simulator.state.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_openai_stream_without_include_usage_reports_no_usage(openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages(), stream=True)
    chunks = await collect_chunks(stream)

    assert streamed_text(chunks) == default_reply(USER_TEXT)
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_gemini_default_reply_and_usage_are_derived_from_the_text(gemini_client: openai.AsyncOpenAI) -> None:
    completion = await gemini_client.chat.completions.create(model="gemini-2.5-flash", messages=chat_messages())

    reply = default_reply(USER_TEXT)
    assert completion.model == "gemini-2.5-flash"
    assert completion.choices[0].message.content == reply
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == tokens(SYSTEM_TEXT) + tokens(USER_TEXT)
    assert usage.completion_tokens == tokens(reply)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is None


async def test_gemini_stream_repeats_cumulative_usage_on_every_chunk(gemini_client: openai.AsyncOpenAI) -> None:
    stream = await gemini_client.chat.completions.create(
        model="gemini-2.5-flash", messages=chat_messages(), stream=True
    )
    chunks = await collect_chunks(stream)

    reply = default_reply(USER_TEXT)
    assert streamed_text(chunks) == reply
    usages = [chunk.usage for chunk in chunks]
    assert all(usage is not None for usage in usages)
    completions = [usage.completion_tokens for usage in usages if usage is not None]
    assert completions == sorted(completions)
    assert completions[0] < completions[-1] == tokens(reply)
    final = usages[-1]
    assert final is not None
    assert final.prompt_tokens == tokens(SYSTEM_TEXT) + tokens(USER_TEXT)
    assert final.total_tokens == final.prompt_tokens + final.completion_tokens


async def test_anthropic_default_reply_and_usage_are_derived_from_the_text(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        system=SYSTEM_TEXT,
        messages=[{"role": "user", "content": USER_TEXT}],
    )

    reply = default_reply(USER_TEXT)
    assert message.model == "claude-haiku-4-5"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == reply
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == tokens(SYSTEM_TEXT) + tokens(USER_TEXT)
    assert message.usage.output_tokens == tokens(reply)
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0


async def test_anthropic_stream_reports_cumulative_usage_in_message_delta(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    stream = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        messages=[{"role": "user", "content": USER_TEXT}],
        stream=True,
    )
    events: list[RawMessageStreamEvent] = [event async for event in stream]

    reply = default_reply(USER_TEXT)
    assert [events[0].type, events[1].type, events[-3].type, events[-2].type, events[-1].type] == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(
        event.delta.text for event in events if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    assert text == reply
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert delta.type == "message_delta"
    assert start.message.usage.input_tokens == tokens(USER_TEXT)
    assert start.message.usage.output_tokens == 1
    assert delta.usage.output_tokens == tokens(reply)
    assert delta.usage.input_tokens == tokens(USER_TEXT)


async def test_anthropic_stream_helper_does_not_count_start_output_twice(
    anthropic_client: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    usage = ScriptedUsage(input=30, cache_write_5m=200, cache_read=1000, output=50)
    simulator.state.enqueue(ScriptedResponse(provider="anthropic", reply="Short and sweet.", usage=usage))

    async with anthropic_client.messages.stream(
        model="claude-haiku-4-5", max_tokens=256, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = await stream.get_final_message()

    assert message.content[0].type == "text"
    assert message.content[0].text == "Short and sweet."
    assert message.usage.input_tokens == 30
    assert message.usage.cache_creation_input_tokens == 200
    assert message.usage.cache_read_input_tokens == 1000
    assert message.usage.output_tokens == 50


# Scripted usage comes back exactly


async def test_openai_scripted_usage_and_model_come_back_exactly(
    openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    usage = ScriptedUsage(prompt=1200, cached=1024, completion=300, reasoning=256)
    simulator.state.enqueue(
        ScriptedResponse(provider="openai", reply="Scripted.", usage=usage, model="gpt-4o-2024-08-06")
    )

    completion = await openai_client.chat.completions.create(model="gpt-4o", messages=chat_messages())

    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.choices[0].message.content == "Scripted."
    reported = completion.usage
    assert reported is not None
    assert (reported.prompt_tokens, reported.completion_tokens, reported.total_tokens) == (1200, 300, 1500)
    assert reported.prompt_tokens_details is not None
    assert reported.prompt_tokens_details.cached_tokens == 1024
    assert reported.completion_tokens_details is not None
    assert reported.completion_tokens_details.reasoning_tokens == 256


async def test_openai_scripted_usage_comes_back_exactly_in_a_stream(
    openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    usage = ScriptedUsage(prompt=900, cached=512, completion=120, reasoning=64)
    simulator.state.enqueue(ScriptedResponse(provider="openai", reply="One two three.", usage=usage))

    stream = await openai_client.chat.completions.create(
        model="o4-mini", messages=chat_messages(), stream=True, stream_options={"include_usage": True}
    )
    chunks = await collect_chunks(stream)

    assert streamed_text(chunks) == "One two three."
    final = chunks[-1].usage
    assert final is not None
    assert (final.prompt_tokens, final.completion_tokens, final.total_tokens) == (900, 120, 1020)
    assert final.prompt_tokens_details is not None
    assert final.prompt_tokens_details.cached_tokens == 512
    assert final.completion_tokens_details is not None
    assert final.completion_tokens_details.reasoning_tokens == 64


async def test_anthropic_scripted_cache_writes_are_split_by_ttl(
    anthropic_client: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    usage = ScriptedUsage(input=12, cache_write_5m=1000, cache_write_1h=2000, cache_read=500, output=40)
    simulator.state.enqueue(ScriptedResponse(provider="anthropic", usage=usage, model="claude-haiku-4-5-20251001"))

    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=[{"role": "user", "content": USER_TEXT}]
    )

    assert message.model == "claude-haiku-4-5-20251001"
    assert message.usage.input_tokens == 12
    assert message.usage.cache_creation_input_tokens == 3000
    assert message.usage.cache_creation is not None
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 1000
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 2000
    assert message.usage.cache_read_input_tokens == 500
    assert message.usage.output_tokens == 40


async def test_gemini_thinking_is_excluded_from_completion_but_counted_in_total(
    gemini_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    usage = ScriptedUsage(prompt=100, cached=20, completion=30, thoughts=70)
    simulator.state.enqueue(ScriptedResponse(provider="gemini", reply="Thought hard.", usage=usage))

    completion = await gemini_client.chat.completions.create(model="gemini-2.5-pro", messages=chat_messages())

    reported = completion.usage
    assert reported is not None
    assert (reported.prompt_tokens, reported.completion_tokens, reported.total_tokens) == (100, 30, 200)
    assert reported.total_tokens > reported.prompt_tokens + reported.completion_tokens
    assert reported.prompt_tokens_details is not None
    assert reported.prompt_tokens_details.cached_tokens == 20


async def test_gemini_stream_ends_with_the_scripted_totals(
    gemini_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    usage = ScriptedUsage(prompt=40, completion=6, thoughts=25)
    simulator.state.enqueue(ScriptedResponse(provider="gemini", reply="alpha beta gamma", usage=usage))

    stream = await gemini_client.chat.completions.create(
        model="gemini-2.5-flash", messages=chat_messages(), stream=True
    )
    chunks = await collect_chunks(stream)

    assert streamed_text(chunks) == "alpha beta gamma"
    totals = [(c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) for c in chunks if c.usage]
    assert len(totals) == len(chunks)
    assert totals[0] == (40, 2, 67)
    assert totals[-1] == (40, 6, 71)


# Scripts


async def test_scripts_are_consumed_in_order_per_provider(
    openai_client: openai.AsyncOpenAI, anthropic_client: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(
        ScriptedResponse(provider="openai", reply="first"),
        ScriptedResponse(provider="anthropic", reply="claude"),
        ScriptedResponse(provider="openai", reply="second"),
    )
    assert simulator.state.pending("openai") == 2

    replies = []
    for _ in range(3):
        completion = await openai_client.chat.completions.create(model="gpt-4o", messages=chat_messages())
        replies.append(completion.choices[0].message.content)
    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )

    assert replies == ["first", "second", default_reply(USER_TEXT)]
    assert message.content[0].type == "text"
    assert message.content[0].text == "claude"
    assert simulator.state.pending("anthropic") == 0


def test_a_usage_field_of_another_provider_is_rejected() -> None:
    with pytest.raises(ValueError, match="cache_read"):
        ScriptedResponse(provider="openai", usage=ScriptedUsage(prompt=10, cache_read=5))
    with pytest.raises(ValueError, match="cached"):
        ScriptedResponse(provider="openai", usage=ScriptedUsage(prompt=10, cached=11))


async def test_the_simulator_records_the_conversation_the_sdk_sent(
    openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    history: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM_TEXT},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
    ]

    await openai_client.chat.completions.create(model="gpt-4o-mini", messages=history)

    [received] = simulator.state.requests_to("openai")
    assert received.body["messages"] == history
    assert received.body["model"] == "gpt-4o-mini"


# Control API over HTTP


async def test_control_api_scripts_records_and_resets(
    control: httpx.AsyncClient, openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    script = [{"provider": "openai", "reply": "via http", "usage": {"prompt": 7, "cached": 3, "completion": 2}}]
    queued = await control.post("/_sim/script", json=script)
    assert queued.status_code == 200
    assert queued.json()["pending"]["openai"] == 1

    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())
    recorded = (await control.get("/_sim/requests")).json()
    reset = await control.post("/_sim/reset", json=None)

    assert completion.choices[0].message.content == "via http"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 7
    assert recorded == [{"provider": "openai", "body": {"model": "gpt-4o-mini", "messages": chat_messages()}}]
    assert reset.status_code == 200
    assert simulator.state.requests == []


async def test_control_api_rejects_a_script_with_an_unknown_field(control: httpx.AsyncClient) -> None:
    response = await control.post("/_sim/script", json=[{"provider": "openai", "replay": "typo"}])

    assert response.status_code == 400
    assert "replay" in response.json()["error"]


# Errors


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(429, openai.RateLimitError), (500, openai.InternalServerError), (503, openai.InternalServerError)],
)
async def test_openai_scripted_error_raises_the_sdk_error(
    openai_client: openai.AsyncOpenAI,
    simulator: RunningSimulator,
    status: int,
    error_class: type[openai.APIStatusError],
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", status=status, retry_after=7))

    with pytest.raises(error_class) as raised:
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())

    assert raised.value.status_code == status
    assert raised.value.response.headers["retry-after"] == "7"
    assert isinstance(raised.value.body, dict)
    assert {"message", "type", "code"} <= raised.value.body.keys()


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
async def test_anthropic_scripted_error_raises_the_sdk_error(
    anthropic_client: anthropic.AsyncAnthropic,
    simulator: RunningSimulator,
    status: int,
    error_class: type[anthropic.APIStatusError],
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="anthropic", status=status))

    with pytest.raises(error_class) as raised:
        await anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )

    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] in {"rate_limit_error", "api_error", "overloaded_error"}


async def test_gemini_scripted_429_raises_rate_limit_error_with_a_google_status_list(
    gemini_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="gemini", status=429, retry_after=1.5))

    with pytest.raises(openai.RateLimitError) as raised:
        await gemini_client.chat.completions.create(model="gemini-2.5-flash", messages=chat_messages())

    assert raised.value.response.headers["retry-after"] == "1.5"
    assert raised.value.body == [
        {
            "error": {
                "code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED",
            }
        }
    ]


async def test_invalid_key_raises_authentication_error_for_every_provider(simulator: RunningSimulator) -> None:
    urls = simulator.base_urls
    async with (
        openai.AsyncOpenAI(base_url=urls.openai, api_key=INVALID_API_KEY, max_retries=0) as openai_client,
        openai.AsyncOpenAI(base_url=urls.gemini, api_key=INVALID_API_KEY, max_retries=0) as gemini_client,
        anthropic.AsyncAnthropic(base_url=urls.anthropic, api_key=INVALID_API_KEY, max_retries=0) as claude,
    ):
        for client in (openai_client, gemini_client):
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="any", messages=chat_messages())
        with pytest.raises(anthropic.AuthenticationError):
            await claude.messages.create(model="any", max_tokens=16, messages=[{"role": "user", "content": "hi"}])

    assert simulator.state.requests == []


async def test_an_invalid_key_does_not_consume_a_script(
    simulator: RunningSimulator, openai_client: openai.AsyncOpenAI
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", reply="kept"))
    async with openai.AsyncOpenAI(
        base_url=simulator.base_urls.openai, api_key=INVALID_API_KEY, max_retries=0
    ) as rejected:
        with pytest.raises(openai.AuthenticationError):
            await rejected.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())

    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())

    assert completion.choices[0].message.content == "kept"


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "error"),
    [
        ("/openai/v1/chat/completions", {}, {"model": "m", "messages": []}, 401, {"type": "invalid_request_error"}),
        ("/gemini/v1beta/openai/chat/completions", {}, {"model": "m", "messages": []}, 401, {"code": 401}),
        ("/anthropic/v1/messages", {}, {"model": "m", "max_tokens": 1, "messages": []}, 401, {}),
        (
            "/anthropic/v1/messages",
            {"x-api-key": "sk-test"},
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            400,
            {"type": "invalid_request_error"},
        ),
        (
            "/openai/v1/chat/completions",
            {"authorization": "Bearer sk-test"},
            {"messages": []},
            400,
            {"type": "invalid_request_error"},
        ),
    ],
)
async def test_missing_credentials_or_fields_are_refused_in_the_provider_format(
    control: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
    error: dict[str, Any],
) -> None:
    response = await control.post(path, json=body, headers=headers)

    assert response.status_code == status
    payload = response.json()
    if path.startswith("/gemini"):
        assert payload[0]["error"].items() >= error.items()
    elif path.startswith("/anthropic"):
        assert payload["type"] == "error"
        assert payload["error"].items() >= error.items()
    else:
        assert payload["error"].items() >= error.items()


async def test_malformed_body_surfaces_as_a_json_decode_error_not_an_sdk_error(
    openai_client: openai.AsyncOpenAI, anthropic_client: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(
        ScriptedResponse(provider="openai", malformed=True), ScriptedResponse(provider="anthropic", malformed=True)
    )

    with pytest.raises(json.JSONDecodeError):
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())
    with pytest.raises(json.JSONDecodeError):
        await anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )


async def test_malformed_stream_event_raises_while_iterating(
    openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", malformed=True))
    stream = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages(), stream=True)

    with pytest.raises(json.JSONDecodeError):
        await collect_chunks(stream)


async def test_delay_trips_the_sdk_timeout(simulator: RunningSimulator) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", delay_ms=1000))
    async with openai.AsyncOpenAI(
        base_url=simulator.base_urls.openai, api_key="sk-test", max_retries=0, timeout=0.1
    ) as impatient:
        started = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            await impatient.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())

    assert time.perf_counter() - started < 0.9


async def test_delay_holds_the_answer_back(openai_client: openai.AsyncOpenAI, simulator: RunningSimulator) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", reply="late", delay_ms=250))

    started = time.perf_counter()
    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=chat_messages())

    assert time.perf_counter() - started >= 0.25
    assert completion.choices[0].message.content == "late"


# Broken streams


async def test_openai_stream_break_drops_the_connection_before_usage(
    openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", reply="one two three four", stream_break_after=2))
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=chat_messages(), stream=True, stream_options={"include_usage": True}
    )
    received: list[ChatCompletionChunk] = []

    with pytest.raises(openai.APIConnectionError):
        await drain_into(stream, received)

    assert streamed_text(received) == "one two "
    assert all(chunk.usage is None for chunk in received)


async def test_anthropic_stream_break_drops_the_connection_before_message_delta(
    anthropic_client: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="anthropic", reply="one two three", stream_break_after=1))
    stream = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received: list[RawMessageStreamEvent] = []

    # anthropic 2.x does not wrap transport errors raised mid-stream: the raw httpx2 error escapes.
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        await drain_into(stream, received)

    assert [event.type for event in received] == ["message_start", "content_block_start", "content_block_delta"]


async def test_gemini_stream_break_leaves_only_partial_usage(
    gemini_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    usage = ScriptedUsage(prompt=10, completion=4, thoughts=5)
    simulator.state.enqueue(
        ScriptedResponse(provider="gemini", reply="one two three four", usage=usage, stream_break_after=2)
    )
    stream = await gemini_client.chat.completions.create(
        model="gemini-2.5-flash", messages=chat_messages(), stream=True
    )
    received: list[ChatCompletionChunk] = []

    with pytest.raises(openai.APIConnectionError):
        await drain_into(stream, received)

    assert streamed_text(received) == "one two "
    last = received[-1].usage
    assert last is not None
    assert last.completion_tokens == 2
    assert all(choice.finish_reason is None for chunk in received for choice in chunk.choices)


# JSON mode


class Action(msgspec.Struct, kw_only=True):
    title: Annotated[str, msgspec.Meta(min_length=12, max_length=40)]
    priority: Literal["low", "high"]
    due: Annotated[datetime, msgspec.Meta(tz=True)]
    estimate_hours: Annotated[int, msgspec.Meta(ge=3, le=10)]


class Summary(msgspec.Struct, kw_only=True):
    summary: str
    sender_id: uuid.UUID
    actions: Annotated[list[Action], msgspec.Meta(min_length=2)]
    tags: list[str]
    urgent: bool
    note: str | None = None


SUMMARY_SCHEMA = msgspec.json.schema(Summary)


def test_the_summary_schema_exercises_refs_enums_formats_and_bounds() -> None:
    rendered = json.dumps(SUMMARY_SCHEMA)

    assert "$ref" in rendered
    assert '"enum"' in rendered
    assert '"format": "date-time"' in rendered
    assert '"minItems": 2' in rendered


async def test_openai_json_schema_response_format_yields_valid_json(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=chat_messages(),
        response_format={"type": "json_schema", "json_schema": {"name": "summary", "schema": SUMMARY_SCHEMA}},
    )

    content = completion.choices[0].message.content
    assert content is not None
    summary = msgspec.json.decode(content, type=Summary)
    assert len(summary.actions) == 2


async def test_gemini_json_object_with_schema_line_yields_valid_json(gemini_client: openai.AsyncOpenAI) -> None:
    system = f"Summarise the email.\nJSON schema: {json.dumps(SUMMARY_SCHEMA, indent=2)}\nNo prose."

    completion = await gemini_client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "An email."}],
        response_format={"type": "json_object"},
    )

    content = completion.choices[0].message.content
    assert content is not None
    msgspec.json.decode(content, type=Summary)


async def test_openai_json_object_without_schema_yields_an_empty_object(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=chat_messages(), response_format={"type": "json_object"}
    )

    assert completion.choices[0].message.content == "{}"


async def test_anthropic_system_schema_line_yields_valid_json(anthropic_client: anthropic.AsyncAnthropic) -> None:
    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=512,
        system=f"Summarise.\nJSON schema: {json.dumps(SUMMARY_SCHEMA)}",
        messages=[{"role": "user", "content": "An email."}],
    )

    assert message.content[0].type == "text"
    msgspec.json.decode(message.content[0].text, type=Summary)


async def test_anthropic_output_format_yields_valid_json(anthropic_client: anthropic.AsyncAnthropic) -> None:
    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=512,
        messages=[{"role": "user", "content": "An email."}],
        output_config={"format": {"type": "json_schema", "schema": SUMMARY_SCHEMA}},
    )

    assert message.content[0].type == "text"
    msgspec.json.decode(message.content[0].text, type=Summary)


async def test_a_scripted_reply_wins_over_json_mode(
    openai_client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", reply='{"summary": "scripted"}'))

    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=chat_messages(), response_format={"type": "json_object"}
    )

    assert completion.choices[0].message.content == '{"summary": "scripted"}'


# Lifecycle


async def test_two_simulators_run_side_by_side_on_their_own_ports() -> None:
    async with running_simulator() as first, running_simulator() as second:
        assert first.origin != second.origin
        first.state.enqueue(ScriptedResponse(provider="openai", reply="only first"))
        assert second.state.pending("openai") == 0
