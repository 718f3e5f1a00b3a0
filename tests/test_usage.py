"""Provider usage reports -> canonical buckets. Expectations are worked out by hand from each provider's semantics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import pytest
from anthropic.types import CacheCreation, MessageDeltaUsage, OutputTokensDetails, Usage
from hypothesis import given
from hypothesis import strategies as st
from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails
from pydantic import BaseModel

from server.llm import usage as mappings
from server.llm.usage import (
    AnthropicStreamUsage,
    AnthropicUsageReport,
    OpenAIUsageReport,
    TokenUsage,
    UsageReportError,
    estimate_usage,
)

ReportT = TypeVar("ReportT", bound=msgspec.Struct)


def both_ways(normalise: Callable[[Any], TokenUsage], report: type[ReportT], usage: BaseModel) -> TokenUsage:
    """``normalise`` of the SDK's model, checked against ``normalise`` of the same usage decoded from its JSON with
    msgspec (what the adapters decode): the same buckets, or the same refusal."""
    decoded = msgspec.json.decode(usage.model_dump_json(), type=report)
    outcomes: list[TokenUsage | str] = []
    for source in (usage, decoded):
        try:
            outcomes.append(normalise(source))
        except UsageReportError as refused:
            outcomes.append(f"refused: {refused}")
    assert outcomes[1] == outcomes[0]
    if isinstance(outcomes[0], str):
        raise UsageReportError(outcomes[0].removeprefix("refused: "))
    return outcomes[0]


# Every test below maps each of its reports both ways (a message_delta usage has no decoded form: streams keep the
# SDK's events).
def usage_from_openai(usage: CompletionUsage) -> TokenUsage:
    return both_ways(mappings.usage_from_openai, OpenAIUsageReport, usage)


def usage_from_gemini_openai_compat(usage: CompletionUsage) -> TokenUsage:
    return both_ways(mappings.usage_from_gemini_openai_compat, OpenAIUsageReport, usage)


def usage_from_anthropic(usage: Usage | MessageDeltaUsage) -> TokenUsage:
    if isinstance(usage, MessageDeltaUsage):
        return mappings.usage_from_anthropic(usage)
    return both_ways(mappings.usage_from_anthropic, AnthropicUsageReport, usage)


counts = st.integers(min_value=0, max_value=2_000_000)


def openai_usage(
    prompt: int,
    completion: int,
    *,
    cached: int | None = None,
    cache_write: int | None = None,
    reasoning: int | None = None,
    total: int | None = None,
    details: bool = True,
) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion if total is None else total,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached, cache_write_tokens=cache_write)
        if details
        else None,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning) if details else None,
    )


# --- OpenAI ---------------------------------------------------------------------------------------------------------


def test_openai_cached_tokens_are_carved_out_of_prompt_tokens() -> None:
    usage = usage_from_openai(openai_usage(1_000, 100, cached=200, reasoning=40))
    assert usage == TokenUsage(
        input=800,
        cache_read=200,
        cache_write_5m=0,
        cache_write_1h=0,
        output=100,
        reasoning=40,
        prompt_tokens=1_000,
        completion_tokens=100,
        total_tokens=1_100,
    )
    assert usage.prompt_total == 1_000


@pytest.mark.parametrize("details", [False, True])
def test_openai_missing_or_null_details_mean_no_cache_and_no_reasoning(details: bool) -> None:
    usage = usage_from_openai(openai_usage(500, 70, details=details))
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (500, 0, 70, 0)


def test_openai_reported_cache_writes_are_part_of_prompt_tokens() -> None:
    usage = usage_from_openai(openai_usage(1_000, 10, cached=300, cache_write=600))
    assert (usage.input, usage.cache_read, usage.cache_write_5m, usage.cache_write_1h) == (100, 300, 600, 0)
    assert usage.prompt_total == usage.prompt_tokens


def test_openai_cached_tokens_exceeding_the_prompt_are_refused() -> None:
    with pytest.raises(UsageReportError, match=r"openai usage: cached_tokens \(1200\) exceeds prompt_tokens \(1000\)"):
        usage_from_openai(openai_usage(1_000, 10, cached=1_200))


def test_openai_reasoning_exceeding_completion_is_refused() -> None:
    with pytest.raises(UsageReportError, match="reasoning_tokens"):
        usage_from_openai(openai_usage(10, 5, reasoning=6))


def test_openai_negative_counts_are_refused() -> None:
    with pytest.raises(UsageReportError, match="completion_tokens must be >= 0"):
        usage_from_openai(openai_usage(10, -1))


@given(data=st.data(), prompt=counts, completion=counts, details=st.booleans())
def test_openai_buckets_add_up_to_the_reported_totals(
    data: st.DataObject, prompt: int, completion: int, details: bool
) -> None:
    cached = data.draw(st.none() | st.integers(0, prompt))
    cache_write = data.draw(st.none() | st.integers(0, prompt - (cached or 0)))
    reasoning = data.draw(st.none() | st.integers(0, completion))
    usage = usage_from_openai(
        openai_usage(prompt, completion, cached=cached, cache_write=cache_write, reasoning=reasoning, details=details)
    )
    if not cache_write:
        assert usage.input + usage.cache_read == usage.prompt_tokens == prompt
    assert usage.prompt_total == prompt
    assert usage.output == usage.completion_tokens == completion
    assert usage.total_tokens == prompt + completion
    assert 0 <= usage.reasoning <= usage.output


# --- Anthropic ------------------------------------------------------------------------------------------------------


def anthropic_usage(
    *,
    input_tokens: int = 1_000,
    cache_creation: int | None = 2_000,
    split: tuple[int, int] | None = (1_500, 500),
    cache_read: int | None = 3_000,
    output: int = 100,
    thinking: int | None = None,
) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        cache_creation_input_tokens=cache_creation,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=split[0], ephemeral_1h_input_tokens=split[1])
        if split is not None
        else None,
        cache_read_input_tokens=cache_read,
        output_tokens=output,
        output_tokens_details=OutputTokensDetails(thinking_tokens=thinking) if thinking is not None else None,
    )


def test_anthropic_cache_tokens_are_not_counted_twice() -> None:
    usage = usage_from_anthropic(anthropic_usage(thinking=30))
    assert usage == TokenUsage(
        input=1_000,
        cache_read=3_000,
        cache_write_5m=1_500,
        cache_write_1h=500,
        output=100,
        reasoning=30,
        prompt_tokens=6_000,
        completion_tokens=100,
        total_tokens=6_100,
    )


def test_anthropic_writes_without_a_ttl_breakdown_are_5_minute_writes() -> None:
    usage = usage_from_anthropic(anthropic_usage(split=None))
    assert (usage.cache_write_5m, usage.cache_write_1h) == (2_000, 0)


def test_anthropic_all_zero_breakdown_is_treated_as_missing() -> None:
    usage = usage_from_anthropic(anthropic_usage(split=(0, 0)))
    assert (usage.cache_write_5m, usage.cache_write_1h) == (2_000, 0)


def test_anthropic_null_cache_fields_are_zero() -> None:
    usage = usage_from_anthropic(anthropic_usage(cache_creation=None, split=None, cache_read=None))
    assert (usage.input, usage.cache_read, usage.cache_write_5m, usage.cache_write_1h) == (1_000, 0, 0, 0)
    assert usage.prompt_tokens == 1_000


def test_anthropic_breakdown_disagreeing_with_the_total_is_refused() -> None:
    with pytest.raises(UsageReportError, match="does not add up to cache_creation_input_tokens"):
        usage_from_anthropic(anthropic_usage(cache_creation=2_000, split=(1_500, 400)))


def test_anthropic_message_delta_usage_is_accepted() -> None:
    delta = MessageDeltaUsage(output_tokens=42, input_tokens=None, cache_read_input_tokens=None)
    usage = usage_from_anthropic(delta)
    assert (usage.input, usage.output, usage.prompt_tokens, usage.total_tokens) == (0, 42, 0, 42)


@given(
    input_tokens=counts,
    split=st.tuples(counts, counts) | st.none(),
    unsplit_writes=counts,
    cache_read=counts,
    output=counts,
)
def test_anthropic_buckets_add_up_to_the_reported_counts(
    input_tokens: int, split: tuple[int, int] | None, unsplit_writes: int, cache_read: int, output: int
) -> None:
    writes = sum(split) if split is not None else unsplit_writes
    usage = usage_from_anthropic(
        anthropic_usage(
            input_tokens=input_tokens, cache_creation=writes, split=split, cache_read=cache_read, output=output
        )
    )
    assert usage.input == input_tokens
    assert usage.cache_read == cache_read
    assert usage.cache_write_5m + usage.cache_write_1h == writes
    assert usage.prompt_total == usage.prompt_tokens == input_tokens + writes + cache_read
    assert usage.output == usage.completion_tokens == output
    assert usage.total_tokens == usage.prompt_total + output


# --- Anthropic streams ----------------------------------------------------------------------------------------------


def test_anthropic_stream_takes_the_last_cumulative_output_never_the_sum() -> None:
    stream = AnthropicStreamUsage()
    stream.on_message_start(anthropic_usage(output=1))
    stream.on_message_delta(MessageDeltaUsage(output_tokens=50))
    stream.on_message_delta(
        MessageDeltaUsage(
            output_tokens=120,
            input_tokens=1_000,
            cache_creation_input_tokens=2_000,
            cache_read_input_tokens=3_000,
            output_tokens_details=OutputTokensDetails(thinking_tokens=20),
        )
    )
    usage = stream.result()
    assert usage is not None
    assert stream.completed
    assert usage == TokenUsage(
        input=1_000,
        cache_read=3_000,
        cache_write_5m=1_500,
        cache_write_1h=500,
        output=120,
        reasoning=20,
        prompt_tokens=6_000,
        completion_tokens=120,
        total_tokens=6_120,
    )


def test_anthropic_stream_without_any_usage_event_has_no_result() -> None:
    assert AnthropicStreamUsage().result() is None


def test_anthropic_stream_broken_after_message_start_is_marked_estimated() -> None:
    stream = AnthropicStreamUsage()
    stream.on_message_start(anthropic_usage(output=1))
    usage = stream.result()
    assert usage is not None
    assert not stream.completed
    assert usage.estimated
    assert (usage.input, usage.cache_read, usage.output) == (1_000, 3_000, 1)


@given(outputs=st.lists(counts, min_size=1, max_size=8).map(sorted))
def test_anthropic_stream_output_is_the_last_delta(outputs: list[int]) -> None:
    stream = AnthropicStreamUsage()
    stream.on_message_start(anthropic_usage(output=0))
    for output in outputs:
        stream.on_message_delta(MessageDeltaUsage(output_tokens=output))
    usage = stream.result()
    assert usage is not None
    assert usage.output == outputs[-1]
    assert usage.prompt_total == 6_000
    assert not usage.estimated


# --- Gemini via the OpenAI-compatible endpoint ----------------------------------------------------------------------


def test_gemini_compat_thinking_missing_from_completion_is_recovered_from_the_total() -> None:
    usage = usage_from_gemini_openai_compat(openai_usage(100, 50, total=350, cached=40, details=True))
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (60, 40, 250, 200)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 50, 350)


def test_gemini_compat_completion_including_thinking_is_taken_as_is() -> None:
    usage = usage_from_gemini_openai_compat(openai_usage(100, 250, reasoning=200))
    assert (usage.input, usage.output, usage.reasoning) == (100, 250, 200)


def test_gemini_compat_null_details() -> None:
    usage = usage_from_gemini_openai_compat(openai_usage(100, 20, details=False))
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (100, 0, 20, 0)


@given(data=st.data(), prompt=counts, completion=counts, thinking=counts)
def test_gemini_compat_output_covers_completion_and_the_total(
    data: st.DataObject, prompt: int, completion: int, thinking: int
) -> None:
    cached = data.draw(st.integers(0, prompt))
    usage = usage_from_gemini_openai_compat(
        openai_usage(prompt, completion, cached=cached, total=prompt + completion + thinking)
    )
    assert usage.prompt_total == prompt
    assert usage.output == completion + thinking
    assert usage.reasoning == thinking


# --- Estimates and validation ---------------------------------------------------------------------------------------


def test_estimate_rounds_up_to_whole_tokens_and_is_marked() -> None:
    usage = estimate_usage(prompt_chars=10, completion_chars=4)
    assert (usage.input, usage.output, usage.total_tokens, usage.estimated) == (3, 1, 4, True)
    assert estimate_usage(0, 0).total_tokens == 0


def test_estimate_refuses_negative_lengths() -> None:
    with pytest.raises(ValueError, match="character counts"):
        estimate_usage(-1, 0)


def test_token_usage_refuses_negative_buckets_and_reasoning_beyond_output() -> None:
    fields: dict[str, Any] = {
        "input": 1,
        "cache_read": 0,
        "cache_write_5m": 0,
        "cache_write_1h": 0,
        "output": 1,
        "reasoning": 0,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "total_tokens": 2,
    }
    with pytest.raises(UsageReportError, match="`cache_read` must be >= 0"):
        TokenUsage(**{**fields, "cache_read": -1})
    with pytest.raises(UsageReportError, match="reasoning"):
        TokenUsage(**{**fields, "reasoning": 2})
    with pytest.raises(msgspec.ValidationError, match="`input` must be >= 0"):
        msgspec.json.decode(msgspec.json.encode({**fields, "input": -5}), type=TokenUsage)
