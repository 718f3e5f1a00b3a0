"""Canonical token buckets, and the per-provider mappings into them.

Every provider counts the same things differently: OpenAI's ``prompt_tokens`` includes cached tokens,
Anthropic's ``input_tokens`` excludes them, Gemini's candidate count excludes thinking. Pricing and storage
only ever see the canonical, disjoint buckets of :class:`TokenUsage`, so each provider's quirk is handled
exactly once, here.

Each mapping reads either the SDK's pydantic model or a report decoded straight from the response bytes with msgspec
(``OpenAIUsageReport``, ``AnthropicUsageReport``: the same field names, only the fields read here), with the same
result: the adapters decode the bytes (``server.llm.providers``), which costs a fraction of building the SDK's models.
"""

from __future__ import annotations

from typing import Final

import msgspec
from anthropic.types import MessageDeltaUsage as AnthropicDeltaUsage
from anthropic.types import Usage as AnthropicUsage
from openai.types import CompletionUsage
from openai.types.images_response import Usage as ImagesUsage

__all__ = [
    "CHARS_PER_TOKEN_ESTIMATE",
    "NO_USAGE",
    "AnthropicStreamUsage",
    "AnthropicUsageReport",
    "OpenAIUsageReport",
    "TokenUsage",
    "UsageReportError",
    "estimate_usage",
    "usage_from_anthropic",
    "usage_from_gemini_openai_compat",
    "usage_from_openai",
    "usage_from_openai_images",
]

CHARS_PER_TOKEN_ESTIMATE = 4
"""OpenAI's published rule of thumb for English text; close enough for Claude and Gemini tokenisers too."""


class UsageReportError(ValueError):
    """A usage report that cannot be true (a part larger than its whole, a negative count).

    Pricing such a report would silently mis-bill, so it is refused loudly instead.
    """


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One call's tokens in disjoint buckets, each billed at its own rate.

    ``prompt_tokens`` / ``completion_tokens`` / ``total_tokens`` keep what the provider itself reported, so
    that a disagreement between our buckets and the provider's figures stays visible in the stored row.
    """

    input: int
    """Prompt tokens neither read from nor written to a cache."""
    cache_read: int
    cache_write_5m: int
    """Writes at the provider's default cache lifetime (Anthropic's 5 minutes; OpenAI has only one kind)."""
    cache_write_1h: int
    output: int
    """Every generated text token, reasoning included: that is what providers bill as output."""
    reasoning: int
    """Informational subset of ``output``; never billed separately."""
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    output_image: int = 0
    """Generated image tokens (the images API), billed at the image-output rate; disjoint from ``output``."""
    estimated: bool = False
    """True when the counts are not the provider's exact report: a stream broke before usage arrived (estimated
    from text), or an image call's report lacked its text/image split (every output token taken as image)."""

    def __post_init__(self) -> None:
        for name in _COUNT_FIELDS:
            value: int = getattr(self, name)
            if value < 0:
                raise UsageReportError(f"token count `{name}` must be >= 0, got {value}")
        if self.reasoning > self.output:
            raise UsageReportError(f"reasoning tokens ({self.reasoning}) cannot exceed output tokens ({self.output})")

    @property
    def prompt_total(self) -> int:
        """Every prompt token however it was billed; price tiers are chosen on this figure."""
        return self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h

    @property
    def generated_total(self) -> int:
        """Every generated token, text and image: what a conversation's ``total_completion_tokens`` grows by."""
        return self.output + self.output_image


_COUNT_FIELDS = (
    "input",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "output_image",
    "reasoning",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)


class _PromptDetails(msgspec.Struct, frozen=True, kw_only=True):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class _CompletionDetails(msgspec.Struct, frozen=True, kw_only=True):
    reasoning_tokens: int | None = None


NO_USAGE: Final = TokenUsage(
    input=0,
    cache_read=0,
    cache_write_5m=0,
    cache_write_1h=0,
    output=0,
    reasoning=0,
    prompt_tokens=0,
    completion_tokens=0,
    total_tokens=0,
)
"""A call that consumed nothing (refused before it was sent, answered from the cache)."""


class OpenAIUsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """The ``usage`` of an OpenAI-compatible chat completion as decoded from its JSON: the fields of the SDK's
    ``CompletionUsage`` that ``usage_from_openai`` and ``usage_from_gemini_openai_compat`` read (others ignored)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _CacheCreation(msgspec.Struct, frozen=True, kw_only=True):
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


class _OutputDetails(msgspec.Struct, frozen=True, kw_only=True):
    thinking_tokens: int


class AnthropicUsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """The ``usage`` of an Anthropic message as decoded from its JSON: the fields of the SDK's ``Usage`` that
    ``usage_from_anthropic`` reads, and the service tier (others ignored)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None
    output_tokens_details: _OutputDetails | None = None
    service_tier: str | None = None


def _non_negative(provider: str, **counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise UsageReportError(f"{provider} usage: {name} must be >= 0, got {value}")


def _part_of(provider: str, part_name: str, part: int, whole_name: str, whole: int) -> None:
    if part > whole:
        raise UsageReportError(f"{provider} usage: {part_name} ({part}) exceeds {whole_name} ({whole})")


def usage_from_openai(usage: CompletionUsage | OpenAIUsageReport) -> TokenUsage:
    """Map OpenAI chat-completions usage, whose ``prompt_tokens`` includes cached tokens and cache writes.

    The SDK's ``prompt_tokens_details.cache_write_tokens`` (reported by models that bill writes) lands in
    ``cache_write_5m``, the bucket for a provider's single default-lifetime write; genai-prices reads the
    field the same way, as a part of ``prompt_tokens``.
    """
    prompt_details = usage.prompt_tokens_details
    cached = (prompt_details.cached_tokens or 0) if prompt_details else 0
    written = (prompt_details.cache_write_tokens or 0) if prompt_details else 0
    completion_details = usage.completion_tokens_details
    reasoning = (completion_details.reasoning_tokens or 0) if completion_details else 0
    _non_negative(
        "openai",
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
    )
    cache_name = "cached_tokens + cache_write_tokens" if written else "cached_tokens"
    _part_of("openai", cache_name, cached + written, "prompt_tokens", usage.prompt_tokens)
    _part_of("openai", "reasoning_tokens", reasoning, "completion_tokens", usage.completion_tokens)
    return TokenUsage(
        input=usage.prompt_tokens - cached - written,
        cache_read=cached,
        cache_write_5m=written,
        cache_write_1h=0,
        output=usage.completion_tokens,
        reasoning=reasoning,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def usage_from_anthropic(usage: AnthropicUsage | AnthropicUsageReport | AnthropicDeltaUsage) -> TokenUsage:
    """Map Anthropic messages usage, whose ``input_tokens`` already excludes cache reads and writes.

    Anthropic reports no prompt total, so ``prompt_tokens`` is ours: input + cache writes + cache reads, the
    figure every other provider calls the prompt; ``completion_tokens`` is ``output_tokens`` and
    ``total_tokens`` the sum. A ``message_delta`` usage is accepted too, but alone it is complete only when it
    repeats the input counts; for streams use :class:`AnthropicStreamUsage`.
    """
    breakdown = usage.cache_creation if isinstance(usage, AnthropicUsage | AnthropicUsageReport) else None
    details = usage.output_tokens_details
    return _anthropic_buckets(
        input_tokens=usage.input_tokens or 0,
        cache_creation=usage.cache_creation_input_tokens,
        write_5m=breakdown.ephemeral_5m_input_tokens if breakdown else None,
        write_1h=breakdown.ephemeral_1h_input_tokens if breakdown else None,
        cache_read=usage.cache_read_input_tokens or 0,
        output=usage.output_tokens,
        thinking=details.thinking_tokens if details else 0,
        estimated=False,
    )


def _anthropic_buckets(
    *,
    input_tokens: int,
    cache_creation: int | None,
    write_5m: int | None,
    write_1h: int | None,
    cache_read: int,
    output: int,
    thinking: int,
    estimated: bool,
) -> TokenUsage:
    _non_negative(
        "anthropic",
        input_tokens=input_tokens,
        cache_creation_input_tokens=cache_creation or 0,
        ephemeral_5m_input_tokens=write_5m or 0,
        ephemeral_1h_input_tokens=write_1h or 0,
        cache_read_input_tokens=cache_read,
        output_tokens=output,
        thinking_tokens=thinking,
    )
    split = (write_5m or 0, write_1h or 0)
    if sum(split) == 0:
        # No TTL breakdown (older API versions, proxies): every write was at the default 5-minute lifetime.
        split = (cache_creation or 0, 0)
    elif cache_creation is not None and sum(split) != cache_creation:
        raise UsageReportError(
            f"anthropic usage: cache_creation breakdown (5m={split[0]}, 1h={split[1]}) does not add up to "
            f"cache_creation_input_tokens ({cache_creation})"
        )
    _part_of("anthropic", "thinking_tokens", thinking, "output_tokens", output)
    prompt = input_tokens + split[0] + split[1] + cache_read
    return TokenUsage(
        input=input_tokens,
        cache_read=cache_read,
        cache_write_5m=split[0],
        cache_write_1h=split[1],
        output=output,
        reasoning=thinking,
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=prompt + output,
        estimated=estimated,
    )


class AnthropicStreamUsage:
    """Usage of one Anthropic stream, from its ``message_start`` and ``message_delta`` events.

    ``message_start`` carries the input and cache counts (and a provisional output count); every
    ``message_delta`` carries *cumulative* counts. Each new value therefore replaces the previous one;
    summing them would double count.
    """

    __slots__ = (
        "_cache_creation",
        "_cache_read",
        "_completed",
        "_input",
        "_output",
        "_started",
        "_thinking",
        "_write_1h",
        "_write_5m",
    )

    def __init__(self) -> None:
        self._started = False
        self._completed = False
        self._input = 0
        self._cache_creation: int | None = None
        self._write_5m: int | None = None
        self._write_1h: int | None = None
        self._cache_read = 0
        self._output = 0
        self._thinking = 0

    def on_message_start(self, usage: AnthropicUsage) -> None:
        self._started = True
        self._input = usage.input_tokens
        self._cache_creation = usage.cache_creation_input_tokens
        if usage.cache_creation is not None:
            self._write_5m = usage.cache_creation.ephemeral_5m_input_tokens
            self._write_1h = usage.cache_creation.ephemeral_1h_input_tokens
        self._cache_read = usage.cache_read_input_tokens or 0
        self._output = usage.output_tokens
        if usage.output_tokens_details is not None:
            self._thinking = usage.output_tokens_details.thinking_tokens

    def on_message_delta(self, usage: AnthropicDeltaUsage) -> None:
        self._started = True
        self._completed = True
        if usage.input_tokens is not None:
            self._input = usage.input_tokens
        if usage.cache_creation_input_tokens is not None:
            self._cache_creation = usage.cache_creation_input_tokens
        if usage.cache_read_input_tokens is not None:
            self._cache_read = usage.cache_read_input_tokens
        self._output = usage.output_tokens
        if usage.output_tokens_details is not None:
            self._thinking = usage.output_tokens_details.thinking_tokens

    @property
    def completed(self) -> bool:
        """Whether a ``message_delta`` arrived, i.e. the output count is final rather than provisional."""
        return self._completed

    def result(self) -> TokenUsage | None:
        """The usage so far, or None when no usage event arrived at all (the caller must estimate).

        Before any ``message_delta`` the output count is only ``message_start``'s provisional one, so the
        result is marked ``estimated``; the input and cache counts are exact either way.
        """
        if not self._started:
            return None
        return _anthropic_buckets(
            input_tokens=self._input,
            cache_creation=self._cache_creation,
            write_5m=self._write_5m,
            write_1h=self._write_1h,
            cache_read=self._cache_read,
            output=self._output,
            thinking=self._thinking,
            estimated=not self._completed,
        )


def usage_from_gemini_openai_compat(usage: CompletionUsage | OpenAIUsageReport) -> TokenUsage:
    """Map Gemini usage from its OpenAI-compatible endpoint, whose ``completion_tokens`` may omit thinking.

    Thinking tokens are billed as output but sometimes appear only in ``total_tokens``, so output is the
    larger of ``completion_tokens`` and ``total_tokens - prompt_tokens``; the gap, when there is one, is the
    reasoning.
    """
    prompt = usage.prompt_tokens
    completion = usage.completion_tokens
    prompt_details = usage.prompt_tokens_details
    cached = (prompt_details.cached_tokens or 0) if prompt_details else 0
    completion_details = usage.completion_tokens_details
    reported_reasoning = (completion_details.reasoning_tokens or 0) if completion_details else 0
    _non_negative(
        "gemini",
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=usage.total_tokens,
        cached_tokens=cached,
        reasoning_tokens=reported_reasoning,
    )
    _part_of("gemini", "cached_tokens", cached, "prompt_tokens", prompt)
    output = max(completion, usage.total_tokens - prompt)
    reasoning = output - completion if output > completion else reported_reasoning
    _part_of("gemini", "reasoning_tokens", reasoning, "output tokens", output)
    return TokenUsage(
        input=prompt - cached,
        cache_read=cached,
        cache_write_5m=0,
        cache_write_1h=0,
        output=output,
        reasoning=reasoning,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=usage.total_tokens,
    )


def usage_from_openai_images(usage: ImagesUsage) -> TokenUsage:
    """Map the images API's usage (``images.generate`` with a GPT Image model): text in, text and image out.

    ``output_tokens_details`` splits the output into text and image tokens, each billed at its own rate. A report
    without that split cannot say which is which: every output token is then taken as an image token (the
    dearer rate: an image call's output is mostly image, and a text rate would under-bill it about three times)
    and the usage is flagged ``estimated``. ``images.generate`` sends no image, so input image tokens are normally
    0; any reported count as input (the text rate is all the buckets know) and flag the usage ``estimated``.
    """
    input_details, output_details = usage.input_tokens_details, usage.output_tokens_details
    input_image = input_details.image_tokens if input_details is not None else 0
    _non_negative(
        "openai images",
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_image_tokens=input_image,
    )
    if output_details is None:
        text_out, image_out, estimated = 0, usage.output_tokens, True
    else:
        text_out, image_out = output_details.text_tokens, output_details.image_tokens
        _non_negative("openai images", output_text_tokens=text_out, output_image_tokens=image_out)
        if text_out + image_out != usage.output_tokens:
            raise UsageReportError(
                f"openai images usage: output text ({text_out}) and image ({image_out}) tokens do not add up to "
                f"output_tokens ({usage.output_tokens})"
            )
        estimated = False
    return TokenUsage(
        input=usage.input_tokens,
        cache_read=0,
        cache_write_5m=0,
        cache_write_1h=0,
        output=text_out,
        output_image=image_out,
        reasoning=0,
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        estimated=estimated or input_image > 0,
    )


def estimate_usage(prompt_chars: int, completion_chars: int) -> TokenUsage:
    """Estimate a call whose stream broke before usage arrived, so that it is still recorded and billed.

    One token per :data:`CHARS_PER_TOKEN_ESTIMATE` characters, rounded up so that any text costs at least a
    token. Everything counts as uncached input and plain output: the cache split is unknowable without the
    provider's report, and assuming no cache hit errs on the side of the higher cost.
    """
    if prompt_chars < 0 or completion_chars < 0:
        raise ValueError(f"character counts must be >= 0, got {prompt_chars} and {completion_chars}")
    prompt = -(-prompt_chars // CHARS_PER_TOKEN_ESTIMATE)
    completion = -(-completion_chars // CHARS_PER_TOKEN_ESTIMATE)
    return TokenUsage(
        input=prompt,
        cache_read=0,
        cache_write_5m=0,
        cache_write_1h=0,
        output=completion,
        reasoning=0,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        estimated=True,
    )
