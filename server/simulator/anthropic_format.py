"""Anthropic messages.

Usage here is disjoint: ``input_tokens`` excludes both cache buckets, cache writes are split by TTL in
``cache_creation``, and ``output_tokens`` includes thinking. A stream reports usage twice, and both are
cumulative: ``message_start`` (input side, and an output count of at most 1) and ``message_delta`` (everything,
final). A consumer that adds the two counts output tokens twice, which is the mistake this simulator exposes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.types import ASGIApp

from server.simulator.default_reply import default_reply, estimate_tokens, split_for_stream
from server.simulator.endpoint import INVALID_API_KEY, ProviderEndpoint, bearer_token, retry_after_headers
from server.simulator.json_mode import minimal_instance, schema_in_text
from server.simulator.responses import json_response, sse_response
from server.simulator.script import ScriptedResponse, ScriptedUsage

# Requests: unknown fields are ignored, the SDK sends many that the simulator has no use for.


class _Block(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


def _text_of(content: str | list[_Block] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(block.text for block in content if block.text)


class AnthropicMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[_Block]


class _OutputFormat(msgspec.Struct, kw_only=True):
    type: str
    json_schema: dict[str, Any] | None = msgspec.field(name="schema", default=None)


class _OutputConfig(msgspec.Struct, kw_only=True):
    format: _OutputFormat | None = None


class MessagesRequest(msgspec.Struct, kw_only=True):
    model: str
    max_tokens: int
    messages: list[AnthropicMessage]
    system: str | list[_Block] | None = None
    stream: bool | None = None
    output_config: _OutputConfig | None = None


# Responses.


class _CacheCreation(msgspec.Struct, kw_only=True):
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


class _Usage(msgspec.Struct, kw_only=True):
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation: _CacheCreation
    output_tokens: int
    service_tier: str = "standard"


class _DeltaUsage(msgspec.Struct, kw_only=True):
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int


class _TextBlock(msgspec.Struct, kw_only=True):
    type: str
    text: str


class _Message(msgspec.Struct, kw_only=True):
    id: str
    type: str
    role: str
    model: str
    content: list[_TextBlock]
    stop_reason: str | None
    stop_sequence: None
    usage: _Usage


class _MessageStart(msgspec.Struct, kw_only=True):
    type: str
    message: _Message


class _ContentBlockStart(msgspec.Struct, kw_only=True):
    type: str
    index: int
    content_block: _TextBlock


class _TextDelta(msgspec.Struct, kw_only=True):
    type: str
    text: str


class _ContentBlockDelta(msgspec.Struct, kw_only=True):
    type: str
    index: int
    delta: _TextDelta


class _ContentBlockStop(msgspec.Struct, kw_only=True):
    type: str
    index: int


class _StopDelta(msgspec.Struct, kw_only=True):
    stop_reason: str
    stop_sequence: None


class _MessageDelta(msgspec.Struct, kw_only=True):
    type: str
    delta: _StopDelta
    usage: _DeltaUsage


class _AnthropicError(msgspec.Struct, kw_only=True):
    type: str
    message: str


class _AnthropicErrorBody(msgspec.Struct, kw_only=True):
    type: str
    error: _AnthropicError


_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
_ENCODER: Final = msgspec.json.Encoder()
_PING: Final = b'event: ping\ndata: {"type": "ping"}\n\n'
_MESSAGE_STOP: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class MessagesEndpoint(ProviderEndpoint[MessagesRequest]):
    """``POST /v1/messages``."""

    def __init__(self) -> None:
        super().__init__("anthropic", msgspec.json.Decoder(MessagesRequest))

    def reject_credentials(self, request: Request[Any, Any, Any]) -> ASGIApp | None:
        key = request.headers.get("x-api-key") or bearer_token(request)
        if not key:
            return self.error(401, "x-api-key header is required")
        if key == INVALID_API_KEY:
            return self.error(401)
        return None

    def error(self, status: int, message: str | None = None, *, retry_after: float | None = None) -> ASGIApp:
        kind, default_message = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", ""))
        body = _AnthropicErrorBody(
            type="error", error=_AnthropicError(type=kind, message=message or default_message or "Error")
        )
        return json_response(_ENCODER.encode(body), status=status, headers=retry_after_headers(retry_after))

    def malformed(self, request: MessagesRequest) -> ASGIApp:
        if request.stream:
            return sse_response([b'event: message_start\ndata: {"type": "message_start", "message": {\n\n'])
        return json_response(b'{"id": "msg_sim", "type": "message", "content": [')

    def answer(self, request: MessagesRequest, script: ScriptedResponse | None, sequence: int) -> ASGIApp:
        model = script.model if script is not None and script.model else request.model
        text = script.reply if script is not None and script.reply is not None else _default_text(request)
        usage = _usage(request, text, script.usage if script is not None else None)
        message_id = f"msg_sim{sequence:06d}"
        if not request.stream:
            message = _Message(
                id=message_id,
                type="message",
                role="assistant",
                model=model,
                content=[_TextBlock(type="text", text=text)],
                stop_reason="end_turn",
                stop_sequence=None,
                usage=usage,
            )
            return json_response(_ENCODER.encode(message))
        break_after = script.stream_break_after if script is not None else None
        return sse_response(_stream(message_id, model, text, usage, break_after), complete=break_after is None)


def _default_text(request: MessagesRequest) -> str:
    schema = _json_schema(request)
    if schema is not None:
        return _ENCODER.encode(minimal_instance(schema)).decode()
    last_user = next((_text_of(m.content) for m in reversed(request.messages) if m.role == "user"), "")
    return default_reply(last_user)


def _json_schema(request: MessagesRequest) -> dict[str, Any] | None:
    """The schema JSON mode must satisfy (structured output format, or a system prompt line), or None."""
    output_format = request.output_config.format if request.output_config is not None else None
    if output_format is not None and output_format.type == "json_schema":
        return output_format.json_schema or {}
    system = _text_of(request.system)
    return _schema_in_system(system) if "JSON schema:" in system else None


@lru_cache(maxsize=256)
def _schema_in_system(system: str) -> dict[str, Any] | None:
    return schema_in_text(system)


def _usage(request: MessagesRequest, text: str, scripted: ScriptedUsage | None) -> _Usage:
    if scripted is None:
        prompt = estimate_tokens(_text_of(request.system)) if request.system else 0
        prompt += sum(estimate_tokens(_text_of(message.content)) for message in request.messages)
        return _Usage(
            input_tokens=prompt,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
            cache_creation=_CacheCreation(ephemeral_5m_input_tokens=0, ephemeral_1h_input_tokens=0),
            output_tokens=estimate_tokens(text),
        )
    return _Usage(
        input_tokens=scripted.input,
        cache_creation_input_tokens=scripted.cache_write_5m + scripted.cache_write_1h,
        cache_read_input_tokens=scripted.cache_read,
        cache_creation=_CacheCreation(
            ephemeral_5m_input_tokens=scripted.cache_write_5m, ephemeral_1h_input_tokens=scripted.cache_write_1h
        ),
        output_tokens=scripted.output,
    )


def _event(name: bytes, payload: msgspec.Struct) -> bytes:
    return b"event: " + name + b"\ndata: " + _ENCODER.encode(payload) + b"\n\n"


def _stream(message_id: str, model: str, text: str, usage: _Usage, break_after: int | None) -> list[bytes]:
    start_usage = msgspec.structs.replace(usage, output_tokens=min(1, usage.output_tokens))
    start = _Message(
        id=message_id,
        type="message",
        role="assistant",
        model=model,
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage=start_usage,
    )
    events = [
        _event(b"message_start", _MessageStart(type="message_start", message=start)),
        _event(
            b"content_block_start",
            _ContentBlockStart(type="content_block_start", index=0, content_block=_TextBlock(type="text", text="")),
        ),
        _PING,
    ]
    events.extend(
        _event(
            b"content_block_delta",
            _ContentBlockDelta(type="content_block_delta", index=0, delta=_TextDelta(type="text_delta", text=piece)),
        )
        for piece in split_for_stream(text)[:break_after]
    )
    if break_after is not None:
        return events
    final_usage = _DeltaUsage(
        input_tokens=usage.input_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        output_tokens=usage.output_tokens,
    )
    events.append(_event(b"content_block_stop", _ContentBlockStop(type="content_block_stop", index=0)))
    events.append(
        _event(
            b"message_delta",
            _MessageDelta(
                type="message_delta",
                delta=_StopDelta(stop_reason="end_turn", stop_sequence=None),
                usage=final_usage,
            ),
        )
    )
    events.append(_MESSAGE_STOP)
    return events
