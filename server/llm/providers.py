"""The providers: one adapter per wire API over its official SDK (which one serves a model: ``routing``).

Gemini is reached through its OpenAI-compatible endpoint with the ``openai`` SDK; its usage report differs from
OpenAI's (completion may exclude thinking), so it has its own usage mapping but shares the adapter.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

import anthropic
import httpx2
import msgspec
import openai
from anthropic.types import AssistantMessageParam, MessageParam, UserMessageParam
from anthropic.types.message_create_params import MessageCreateParamsBase
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionStreamOptionsParam
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.shared_params import ResponseFormatJSONSchema

from schemas.usage import Provider
from server.errors import LLMError, LLMFailure
from server.llm.usage import (
    AnthropicStreamUsage,
    AnthropicUsageReport,
    OpenAIUsageReport,
    TokenUsage,
    UsageReportError,
    usage_from_anthropic,
    usage_from_gemini_openai_compat,
    usage_from_openai,
)
from server.settings import ProviderSettings, Settings

ProviderName = Provider

DEFAULT_MAX_TOKENS: Final = 1024


class ChatTurn(msgspec.Struct, frozen=True, kw_only=True):
    role: Literal["user", "assistant"]
    content: str


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A provider-neutral chat completion request.

    ``json_schema``: the reply must be a JSON object valid against this schema (with an object at its root, see
    ``structured.object_schema``); each adapter asks for it through its API's structured-output mode.
    """

    model: str
    messages: tuple[ChatTurn, ...]
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    json_schema: Mapping[str, Any] | None = None
    json_schema_name: str = "result"

    def system_prompt(self) -> str | None:
        if self.json_schema is None:
            return self.system
        return f"{self.system}\n\nRespond with JSON only." if self.system else "Respond with JSON only."


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    usage: TokenUsage
    model: str
    """The model the provider reports having used (often a dated snapshot of the requested one)."""
    service_tier: str | None = None


class TextDelta(msgspec.Struct, frozen=True):
    """A piece of a streamed reply; the pieces joined, in order, are the reply."""

    text: str


class StreamEnd(msgspec.Struct, frozen=True, kw_only=True):
    """The provider's final report on a stream. Only a stream that completed has one: without it there is no usage."""

    usage: TokenUsage
    model: str
    service_tier: str | None = None


StreamChunk = TextDelta | StreamEnd


class _ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    text: str | None = None


class _Message(msgspec.Struct, frozen=True, kw_only=True):
    content: str | list[_ContentPart] | None = None
    """A string, or (some compatible servers) a list of content parts of which the text ones make the reply."""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class _Choice(msgspec.Struct, frozen=True, kw_only=True):
    message: _Message | None = None


class _ChatCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """What a reply needs of an OpenAI-compatible chat completion (the SDK's ``ChatCompletion`` holds much more)."""

    choices: list[_Choice] | None = None
    model: str | None = None
    usage: OpenAIUsageReport | None = None
    service_tier: str | None = None


class _ContentBlock(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    text: str | None = None


class _AnthropicMessage(msgspec.Struct, frozen=True, kw_only=True):
    """What a reply needs of an Anthropic message (the SDK's ``Message`` holds much more)."""

    content: list[_ContentBlock]
    usage: AnthropicUsageReport
    model: str | None = None


# A non-streamed reply is taken from the SDK as bytes (its transport, auth, retries and errors unchanged) and decoded
# here into the few fields a reply needs: 3 us against 280 us for the SDK's pydantic ``ChatCompletion`` of the same
# body (best of 7, on the shared development machine). A body these cannot decode is a malformed response
# (``msgspec``'s errors are ``ValueError``s). Streams keep the SDK's event models.
_CHAT_COMPLETION: Final = msgspec.json.Decoder(_ChatCompletion)
_MESSAGE: Final = msgspec.json.Decoder(_AnthropicMessage)


def _decode_chat_completion(body: bytes) -> _ChatCompletion:
    """The reply in ``body``, as strictly as the fast decoder reads it, else as leniently as the SDK's models would:
    counts sent as integral floats, a usage report without ``total_tokens`` (the sum of the other two). Raises
    ``ValueError`` (msgspec's errors are) when even that cannot read it."""
    try:
        return _CHAT_COMPLETION.decode(body)
    except msgspec.ValidationError:
        document = msgspec.json.decode(body)
        usage = document.get("usage") if isinstance(document, dict) else None
        if isinstance(usage, dict) and usage.get("total_tokens") is None:
            counts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
            if all(isinstance(count, int | float) for count in counts):
                usage["total_tokens"] = sum(counts)
        return msgspec.convert(document, _ChatCompletion, strict=False)


class ProviderAdapter(Protocol):
    name: ProviderName

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        """Text deltas as they arrive, then one ``StreamEnd`` when the provider reported usage.

        Closing the iterator early closes the provider's response, which stops the generation (and its billing).
        Raises ``LLMError`` for a provider failure, before or during the stream.
        """
        ...


@dataclass(slots=True)
class OpenAIChatAdapter:
    """OpenAI chat completions, and any endpoint that speaks them (Gemini's compatible endpoint)."""

    name: ProviderName
    client: openai.AsyncOpenAI
    normalise: Callable[[CompletionUsage | OpenAIUsageReport], TokenUsage]

    async def complete(self, request: CompletionRequest) -> Completion:
        try:
            # The SDK's generic POST (its transport, auth, retries and errors) with the parameters as they are: plain
            # JSON, which ``chat.completions.create`` would walk against its TypedDicts to rename nothing (no field
            # of these has an alias): 0.8 ms per call on the shared development machine.
            raw = await self.client.post("/chat/completions", body=self._params(request), cast_to=httpx2.Response)
        except (openai.OpenAIError, ValueError) as error:
            raise translate_error(self.name, error) from None
        # From here on the provider has answered (and billed) the call: a failure is billable, recorded estimated.
        try:
            response = _decode_chat_completion(raw.content)
        except ValueError as error:
            raise translate_error(self.name, error, billable=True) from None
        if response.usage is None:
            message = f"{self.name} returned no usage report"
            raise LLMError(LLMFailure.BAD_RESPONSE, message, error_type="MissingUsage", billable=True)
        choices = response.choices or []
        text = "".join(choice.message.text() for choice in choices[:1] if choice.message is not None)
        return Completion(
            text=text,
            usage=_normalised(self.name, self.normalise, response.usage, billable=True),
            model=response.model or request.model,
            service_tier=response.service_tier,
        )

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        # OpenAI reports usage only when asked, in a last chunk without choices; Gemini repeats its cumulative usage
        # on every chunk. Either way the last report seen is the call's.
        usage: CompletionUsage | None = None
        model, service_tier = request.model, None
        try:
            chunks = await self.client.chat.completions.create(
                **self._params(request, stream_options={"include_usage": True}), stream=True
            )
        except (openai.OpenAIError, ValueError) as error:
            raise translate_error(self.name, error) from None
        try:
            async with chunks:
                async for chunk in chunks:
                    usage = chunk.usage or usage
                    model = chunk.model or model
                    service_tier = chunk.service_tier or service_tier
                    for choice in chunk.choices:
                        if choice.index == 0 and choice.delta.content:
                            yield TextDelta(choice.delta.content)
        except (openai.OpenAIError, httpx2.TransportError, ValueError) as error:
            raise translate_error(self.name, error, billable=True) from None
        if usage is not None:
            normalised = _normalised(self.name, self.normalise, usage, billable=True)
            yield StreamEnd(usage=normalised, model=model, service_tier=service_tier)

    def _params(
        self, request: CompletionRequest, *, stream_options: ChatCompletionStreamOptionsParam | None = None
    ) -> CompletionCreateParamsBase:
        messages: list[ChatCompletionMessageParam] = []
        if (system := request.system_prompt()) is not None:
            messages.append({"role": "system", "content": system})
        for turn in request.messages:
            if turn.role == "user":
                messages.append({"role": "user", "content": turn.content})
            else:
                messages.append({"role": "assistant", "content": turn.content})
        params: CompletionCreateParamsBase = {"model": request.model, "messages": messages}
        if request.max_tokens is not None:
            # OpenAI's reasoning models accept only max_completion_tokens; Gemini's endpoint documents max_tokens.
            if self.name == "gemini":
                params["max_tokens"] = request.max_tokens
            else:
                params["max_completion_tokens"] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.json_schema is not None:
            params["response_format"] = _openai_format(request)
        if stream_options is not None:
            params["stream_options"] = stream_options
        return params


@dataclass(slots=True)
class AnthropicMessagesAdapter:
    name: ProviderName
    client: anthropic.AsyncAnthropic

    async def complete(self, request: CompletionRequest) -> Completion:
        try:
            # Through ``messages.create`` still, which warns of a model's end of life (``sdk_warnings`` logs it) and
            # guards non-streamed calls; only its parsing is skipped.
            raw = await self.client.messages.with_raw_response.create(**self._params(request))
            body = await raw.read()
        except (anthropic.AnthropicError, ValueError) as error:
            raise translate_error(self.name, error) from None
        # From here on the provider has answered (and billed) the call: a failure is billable, recorded estimated.
        try:
            response = _MESSAGE.decode(body)
        except ValueError as error:
            raise translate_error(self.name, error, billable=True) from None
        text = "".join(block.text or "" for block in response.content if block.type == "text")
        return Completion(
            text=text,
            usage=_normalised(self.name, usage_from_anthropic, response.usage, billable=True),
            model=response.model or request.model,
            service_tier=response.usage.service_tier,
        )

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        # message_start reports the prompt side, each message_delta the cumulative totals: the accumulator keeps the
        # latest of each, never a sum.
        usage = AnthropicStreamUsage()
        model, service_tier = request.model, None
        try:
            events = await self.client.messages.create(**self._params(request), stream=True)
        except (anthropic.AnthropicError, ValueError) as error:
            raise translate_error(self.name, error) from None
        try:
            async with events:
                async for event in events:
                    if event.type == "message_start":
                        usage.on_message_start(event.message.usage)
                        model = event.message.model or model
                        service_tier = event.message.usage.service_tier
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield TextDelta(event.delta.text)
                    elif event.type == "message_delta":
                        usage.on_message_delta(event.usage)
        # anthropic 2.x lets its transport's errors (httpx2) escape from a stream that breaks off.
        except (anthropic.AnthropicError, httpx2.TransportError, ValueError) as error:
            raise translate_error(self.name, error, billable=True) from None
        try:
            # Until a message_delta arrives the output count is message_start's provisional one: no report yet.
            final = usage.result() if usage.completed else None
        except UsageReportError as error:
            raise impossible_usage(self.name, error, billable=True) from None
        if final is not None:
            yield StreamEnd(usage=final, model=model, service_tier=service_tier)

    def _params(self, request: CompletionRequest) -> MessageCreateParamsBase:
        messages: list[MessageParam] = []
        for turn in request.messages:
            if turn.role == "user":
                messages.append(UserMessageParam(role="user", content=turn.content))
            else:
                messages.append(AssistantMessageParam(role="assistant", content=turn.content))
        # The Messages API of anthropic 2.x has no temperature: it is not sent for Claude models.
        params: MessageCreateParamsBase = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if (system := request.system_prompt()) is not None:
            params["system"] = system
        if request.json_schema is not None:
            params["output_config"] = {"format": {"type": "json_schema", "schema": dict(request.json_schema)}}
        return params


def _openai_format(request: CompletionRequest) -> ResponseFormatJSONSchema:
    assert request.json_schema is not None
    return {
        "type": "json_schema",
        # Not strict: OpenAI's strict mode refuses schemas with optional fields or string patterns.
        "json_schema": {"name": request.json_schema_name, "schema": dict(request.json_schema), "strict": False},
    }


class ProviderSet:
    """One SDK client per provider, built once and shared: connection pools are reused across calls."""

    def __init__(self, adapters: Mapping[ProviderName, ProviderAdapter]) -> None:
        self._adapters = dict(adapters)

    @classmethod
    def from_settings(cls, settings: Settings, *, simulator_origin: str | None = None) -> ProviderSet:
        """Adapters for the configured providers.

        With ``simulator_origin`` (offline mode), a provider without a key of its own is pointed at the built-in
        simulator, so the service answers without network access.
        """
        timeout, retries = settings.provider_timeout_seconds, settings.provider_max_retries

        def resolve(provider: ProviderName, configured: ProviderSettings, path: str) -> tuple[str | None, str | None]:
            if configured.api_key is None and simulator_origin is not None:
                return "offline-simulator", f"{simulator_origin}{path}"
            return configured.api_key, configured.base_url

        adapters: dict[ProviderName, ProviderAdapter] = {}
        key, url = resolve("openai", settings.openai, "/openai/v1")
        if key is not None:
            client = openai.AsyncOpenAI(api_key=key, base_url=url, timeout=timeout, max_retries=retries)
            adapters["openai"] = OpenAIChatAdapter("openai", client, usage_from_openai)
        key, url = resolve("gemini", settings.gemini, "/gemini/v1beta/openai/")
        if key is not None:
            client = openai.AsyncOpenAI(api_key=key, base_url=url, timeout=timeout, max_retries=retries)
            adapters["gemini"] = OpenAIChatAdapter("gemini", client, usage_from_gemini_openai_compat)
        key, url = resolve("anthropic", settings.anthropic, "/anthropic")
        if key is not None:
            claude = anthropic.AsyncAnthropic(api_key=key, base_url=url, timeout=timeout, max_retries=retries)
            adapters["anthropic"] = AnthropicMessagesAdapter("anthropic", claude)
        return cls(adapters)

    def adapter(self, provider: ProviderName) -> ProviderAdapter:
        adapter = self._adapters.get(provider)
        if adapter is None:
            key = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}[provider]
            raise LLMError(
                LLMFailure.NOT_CONFIGURED,
                f"{provider} is not configured on this server (set {key})",
                error_type="ProviderNotConfigured",
            )
        return adapter


_SECRET: Final = re.compile(r"(sk|tb|key|AIza)[-_A-Za-z0-9]{8,}")


def _sanitise(message: str) -> str:
    """A provider's error message, short and without anything that looks like a key."""
    return _SECRET.sub("[redacted]", message)[:300]


UsageT = TypeVar("UsageT")


def _normalised(
    provider: str, normalise: Callable[[UsageT], TokenUsage], usage: UsageT, *, billable: bool = False
) -> TokenUsage:
    try:
        return normalise(usage)
    except UsageReportError as error:
        raise impossible_usage(provider, error, billable=billable) from None


def impossible_usage(provider: str, error: UsageReportError, *, billable: bool) -> LLMError:
    # Pricing an impossible report would mis-bill silently; the call fails loudly instead.
    message = f"{provider} reported impossible usage: {error}"
    return LLMError(LLMFailure.BAD_RESPONSE, message, error_type="BadUsage", billable=billable)


def translate_error(
    provider: str,
    error: openai.OpenAIError | anthropic.AnthropicError | httpx2.TransportError | ValueError,
    *,
    billable: bool = False,
) -> LLMError:
    """The error a caller sees for a provider failure. Credentials problems never reveal the key.

    ``billable`` when the failure came after the provider had begun to answer (see ``LLMError``).
    """
    failure, message = _classify(provider, error)
    return LLMError(failure, message, error_type=type(error).__name__, billable=billable)


def _classify(
    provider: str, error: openai.OpenAIError | anthropic.AnthropicError | httpx2.TransportError | ValueError
) -> tuple[LLMFailure, str]:
    if isinstance(error, ValueError):
        # Neither SDK wraps a 200 response whose body is not JSON: json.JSONDecodeError escapes as it is.
        return LLMFailure.BAD_RESPONSE, f"{provider} sent a malformed response"
    if isinstance(error, openai.APITimeoutError | anthropic.APITimeoutError | httpx2.TimeoutException):
        return LLMFailure.TIMEOUT, f"{provider} did not answer in time"
    if isinstance(error, openai.APIConnectionError | anthropic.APIConnectionError | httpx2.TransportError):
        return LLMFailure.UNREACHABLE, f"could not reach {provider}"
    if isinstance(error, openai.APIResponseValidationError | anthropic.APIResponseValidationError):
        return LLMFailure.BAD_RESPONSE, f"{provider} sent a malformed response"
    status = getattr(error, "status_code", None)
    detail = getattr(error, "message", "") or str(error)
    # Gemini answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID, not with 401.
    if status in (401, 403) or (status == 400 and "API_KEY_INVALID" in detail):
        return LLMFailure.CREDENTIALS_REJECTED, f"the server's {provider} credentials were rejected"
    if status == 429:
        return LLMFailure.RATE_LIMITED, f"{provider} rate limit reached, retry later"
    if status in (400, 404, 413, 422):
        return LLMFailure.INVALID_REQUEST, f"{provider} rejected the request: {_sanitise(detail)}"
    if status in (503, 529):
        return LLMFailure.OVERLOADED, f"{provider} is overloaded, retry later"
    if status is not None and status >= 500:
        return LLMFailure.UPSTREAM_ERROR, f"{provider} failed with HTTP {status}"
    return LLMFailure.UPSTREAM_ERROR, f"{provider} call failed"
