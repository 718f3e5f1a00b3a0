"""OpenAI chat completions, and Gemini's OpenAI-compatible dialect of them.

The two share the wire shape but not the usage arithmetic, which is the point of simulating both:
- OpenAI: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``, ``completion_tokens`` includes
  ``completion_tokens_details.reasoning_tokens``; a stream carries usage only in a final chunk with empty
  ``choices``, and only when ``stream_options.include_usage`` is true.
- Gemini: ``completion_tokens`` excludes thinking while ``total_tokens`` includes it; a stream repeats the
  cumulative usage on every chunk. Errors come as a JSON list holding one Google RPC status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.types import ASGIApp

from server.simulator.default_reply import default_reply, estimate_tokens, split_for_stream
from server.simulator.endpoint import INVALID_API_KEY, ProviderEndpoint, bearer_token, retry_after_headers
from server.simulator.json_mode import minimal_instance, schema_in_text
from server.simulator.responses import json_response, sse_response
from server.simulator.script import Provider, ScriptedResponse, ScriptedUsage

_INSTRUCTION_ROLES: Final = frozenset({"system", "developer"})
_DONE: Final = b"data: [DONE]\n\n"


# Requests: unknown fields are ignored, the SDKs send many that the simulator has no use for.


class _ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[_ContentPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text for part in self.content if part.text)


class _StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool | None = None


class _JsonSchemaFormat(msgspec.Struct, kw_only=True):
    json_schema: dict[str, Any] | None = msgspec.field(name="schema", default=None)


class _ResponseFormat(msgspec.Struct, kw_only=True):
    type: str
    json_schema: _JsonSchemaFormat | None = None


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    response_format: _ResponseFormat | None = None


# Responses.


class _PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int
    audio_tokens: int = 0


class _CompletionTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class _Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptTokensDetails | None = None
    completion_tokens_details: _CompletionTokensDetails | None = None


class _AssistantMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str
    refusal: None = None
    annotations: list[Any] = []


class _Choice(msgspec.Struct, kw_only=True):
    index: int
    message: _AssistantMessage
    finish_reason: str
    logprobs: None = None


class _ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    usage: _Usage


class _Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class _ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: _Delta
    finish_reason: str | None = None
    logprobs: None = None


class _ChatCompletionChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[_ChunkChoice]
    usage: _Usage | None = None


class _OpenAIError(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class _OpenAIErrorBody(msgspec.Struct, kw_only=True):
    error: _OpenAIError


class _GoogleStatus(msgspec.Struct, kw_only=True):
    code: int
    message: str
    status: str


class _GoogleErrorBody(msgspec.Struct, kw_only=True):
    error: _GoogleStatus


_OPENAI_ERRORS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Request not allowed."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_GOOGLE_STATUSES: Final[dict[int, tuple[str, str]]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "The requested model was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in the troubleshooting guide."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}
_ENCODER: Final = msgspec.json.Encoder()


class _Counts(msgspec.Struct, frozen=True, kw_only=True):
    prompt: int
    cached: int
    completion: int
    reasoning: int
    thoughts: int


class ChatCompletionsEndpoint(ProviderEndpoint[ChatCompletionRequest]):
    """``POST .../chat/completions`` for ``provider`` "openai" or "gemini"."""

    def __init__(self, provider: Provider) -> None:
        if provider == "anthropic":
            raise ValueError("Anthropic does not speak chat completions")
        super().__init__(provider, msgspec.json.Decoder(ChatCompletionRequest))
        self._gemini: Final = provider == "gemini"
        self._id_prefix: Final = "gemini-sim-" if self._gemini else "chatcmpl-sim"

    def reject_credentials(self, request: Request[Any, Any, Any]) -> ASGIApp | None:
        return reject_openai_credentials(request, self.error)

    def error(self, status: int, message: str | None = None, *, retry_after: float | None = None) -> ASGIApp:
        if self._gemini:
            name, default_message = _GOOGLE_STATUSES.get(status, ("UNKNOWN", "Unknown error."))
            status_body = _GoogleStatus(code=status, message=message or default_message, status=name)
            headers = retry_after_headers(retry_after)
            return json_response(_ENCODER.encode([_GoogleErrorBody(error=status_body)]), status=status, headers=headers)
        return openai_error(status, message, retry_after=retry_after)

    def malformed(self, request: ChatCompletionRequest) -> ASGIApp:
        if request.stream:
            return sse_response([b'data: {"id": "chatcmpl-sim", "choices": [\n\n', _DONE])
        return json_response(b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [')

    def answer(self, request: ChatCompletionRequest, script: ScriptedResponse | None, sequence: int) -> ASGIApp:
        model = script.model if script is not None and script.model else request.model
        text = script.reply if script is not None and script.reply is not None else _default_text(request)
        counts = _counts(request, text, script.usage if script is not None else None)
        response_id = f"{self._id_prefix}{sequence:06d}"
        created = int(time.time())
        if request.stream:
            break_after = script.stream_break_after if script is not None else None
            if self._gemini:
                events = _gemini_stream(response_id, created, model, text, counts, break_after)
            else:
                include_usage = bool(request.stream_options and request.stream_options.include_usage)
                events = _openai_stream(response_id, created, model, text, counts, break_after, include_usage)
            return sse_response(events, complete=break_after is None)
        completion = _ChatCompletion(
            id=response_id,
            object="chat.completion",
            created=created,
            model=model,
            choices=[_Choice(index=0, message=_AssistantMessage(role="assistant", content=text), finish_reason="stop")],
            usage=_gemini_usage(counts) if self._gemini else _openai_usage(counts),
        )
        return json_response(_ENCODER.encode(completion))


def reject_openai_credentials(
    request: Request[Any, Any, Any], error: Callable[[int, str | None], ASGIApp]
) -> ASGIApp | None:
    """OpenAI's 401 (through ``error``) when the key is missing or is ``INVALID_API_KEY``; None lets it in."""
    key = bearer_token(request)
    if key is None:
        return error(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if key == INVALID_API_KEY:
        return error(401, None)
    return None


def openai_error(status: int, message: str | None = None, *, retry_after: float | None = None) -> ASGIApp:
    """An error in OpenAI's JSON shape, so that the openai SDK raises the class it raises in production."""
    kind, code, default_message = _OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    error = _OpenAIError(message=message or default_message, type=kind, param=None, code=code)
    headers = retry_after_headers(retry_after)
    return json_response(_ENCODER.encode(_OpenAIErrorBody(error=error)), status=status, headers=headers)


def _openai_usage(counts: _Counts) -> _Usage:
    return _Usage(
        prompt_tokens=counts.prompt,
        completion_tokens=counts.completion,
        total_tokens=counts.prompt + counts.completion,
        prompt_tokens_details=_PromptTokensDetails(cached_tokens=counts.cached),
        completion_tokens_details=_CompletionTokensDetails(reasoning_tokens=counts.reasoning),
    )


def _gemini_usage(counts: _Counts, completion: int | None = None) -> _Usage:
    """Thinking counts in the total only; ``completion`` overrides the completion so far in a stream."""
    completion = counts.completion if completion is None else completion
    return _Usage(
        prompt_tokens=counts.prompt,
        completion_tokens=completion,
        total_tokens=counts.prompt + completion + counts.thoughts,
        prompt_tokens_details=_PromptTokensDetails(cached_tokens=counts.cached) if counts.cached else None,
    )


def _default_text(request: ChatCompletionRequest) -> str:
    schema = _json_schema(request)
    if schema is not None:
        return _json_text(schema)
    last_user = next((message.text for message in reversed(request.messages) if message.role == "user"), "")
    return default_reply(last_user)


def _json_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The schema JSON mode must satisfy, or None when the request does not ask for JSON."""
    response_format = request.response_format
    if response_format is not None and response_format.type == "json_schema":
        embedded = response_format.json_schema
        return embedded.json_schema if embedded is not None and embedded.json_schema is not None else {}
    instructions = "\n".join(message.text for message in request.messages if message.role in _INSTRUCTION_ROLES)
    schema = _schema_in_instructions(instructions) if "JSON schema:" in instructions else None
    if schema is None and response_format is not None and response_format.type == "json_object":
        return {}
    return schema


@lru_cache(maxsize=256)
def _schema_in_instructions(instructions: str) -> dict[str, Any] | None:
    return schema_in_text(instructions)


def _json_text(schema: dict[str, Any]) -> str:
    return _ENCODER.encode(minimal_instance(schema)).decode()


def _counts(request: ChatCompletionRequest, text: str, usage: ScriptedUsage | None) -> _Counts:
    if usage is not None:
        return _Counts(
            prompt=usage.prompt,
            cached=usage.cached,
            completion=usage.completion,
            reasoning=usage.reasoning,
            thoughts=usage.thoughts,
        )
    prompt = sum(estimate_tokens(message.text) for message in request.messages)
    return _Counts(prompt=prompt, cached=0, completion=estimate_tokens(text), reasoning=0, thoughts=0)


def _sse(chunk: _ChatCompletionChunk) -> bytes:
    return b"data: " + _ENCODER.encode(chunk) + b"\n\n"


def _openai_stream(
    response_id: str,
    created: int,
    model: str,
    text: str,
    counts: _Counts,
    break_after: int | None,
    include_usage: bool,
) -> list[bytes]:
    def chunk(delta: _Delta, finish_reason: str | None = None) -> bytes:
        choice = _ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)
        return _sse(
            _ChatCompletionChunk(
                id=response_id, object="chat.completion.chunk", created=created, model=model, choices=[choice]
            )
        )

    pieces = split_for_stream(text)
    events = [chunk(_Delta(role="assistant", content=""))]
    events.extend(chunk(_Delta(content=piece)) for piece in pieces[:break_after])
    if break_after is not None:
        return events
    events.append(chunk(_Delta(), "stop"))
    if include_usage:
        usage = _openai_usage(counts)
        events.append(
            _sse(
                _ChatCompletionChunk(
                    id=response_id,
                    object="chat.completion.chunk",
                    created=created,
                    model=model,
                    choices=[],
                    usage=usage,
                )
            )
        )
    events.append(_DONE)
    return events


def _gemini_stream(
    response_id: str, created: int, model: str, text: str, counts: _Counts, break_after: int | None
) -> list[bytes]:
    """Every chunk carries usage so far: the prompt and thoughts up front, completion tokens as text arrives."""
    pieces = split_for_stream(text)
    events: list[bytes] = []
    for number, piece in enumerate(pieces[:break_after], start=1):
        completion_so_far = -(-counts.completion * number // len(pieces))
        choice = _ChunkChoice(index=0, delta=_Delta(role="assistant", content=piece))
        events.append(
            _sse(
                _ChatCompletionChunk(
                    id=response_id,
                    object="chat.completion.chunk",
                    created=created,
                    model=model,
                    choices=[choice],
                    usage=_gemini_usage(counts, completion_so_far),
                )
            )
        )
    if break_after is not None:
        return events
    final_choice = _ChunkChoice(index=0, delta=_Delta(role="assistant"), finish_reason="stop")
    events.append(
        _sse(
            _ChatCompletionChunk(
                id=response_id,
                object="chat.completion.chunk",
                created=created,
                model=model,
                choices=[final_choice],
                usage=_gemini_usage(counts),
            )
        )
    )
    events.append(_DONE)
    return events
