"""Reading a request's raw inputs (``?input=`` or the body, single or batched) and decoding one call's input.

Decoding is validation: the msgspec decoder built once per procedure rejects wrong types, unknown and missing fields,
and its message names the field by its wire (camelCase) name, e.g. ``Expected `int`, got `str` - at `$.maxTokens```.
Input that is not JSON, or JSON nested deeper than msgspec recurses (it raises ``RecursionError``), is PARSE_ERROR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException

from schemas.registry import LAST_EVENT_ID
from server.rpc.errors import ErrorCode, TRPCError, to_trpc_error

__all__ = (
    "RawInput",
    "RequestInputs",
    "decode_input",
    "only_last_event_id",
    "read_inputs",
    "with_last_event_id",
)

RawInput = bytes | msgspec.Raw
"""One call's input as JSON text; None stands for "no input"."""

_batch_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_any_decoder: Final = msgspec.json.Decoder()
_any_encoder: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class RequestInputs:
    """The inputs of every call of a request; ``error`` (e.g. a body too large) is reported by each call needing one."""

    single: RawInput | None = None
    batch: dict[str, msgspec.Raw] | None = None
    error: TRPCError | None = None

    def get(self, index: int) -> RawInput | None:
        if self.error is not None:
            raise self.error
        if self.batch is not None:
            return self.batch.get(str(index))
        return self.single


async def read_inputs(request: Request[Any, Any, Any], *, is_batch: bool) -> RequestInputs:
    raw: bytes | None
    if request.method == "GET":
        text = request.query_params.get("input")
        raw = text.encode() if text else None
    else:
        try:
            raw = await request.body() or None
        except HTTPException as exc:
            return RequestInputs(error=to_trpc_error(exc))
    if not is_batch:
        return RequestInputs(single=raw)
    if raw is None:
        return RequestInputs(batch={})
    try:
        return RequestInputs(batch=_batch_decoder.decode(raw))
    except msgspec.ValidationError as exc:
        error = TRPCError(ErrorCode.BAD_REQUEST, '"input" needs to be an object when doing a batch call', exc)
    except (msgspec.DecodeError, RecursionError) as exc:
        error = _not_json(exc)
    return RequestInputs(error=error)


def decode_input(
    path: str, decoder: msgspec.json.Decoder[Any] | None, raw: RawInput | None, default: Any = None
) -> Any:
    """The typed input of a call; None for a procedure without input (which accepts an absent or null input).

    ``default`` is the input of a call that sends none (absent or null), for a procedure whose input fields all have
    defaults (``Binding.default_input``); without it such a call is BAD_REQUEST.
    """
    if decoder is None:
        if raw is None or _decode_any(raw) is None:
            return None
        raise TRPCError(ErrorCode.BAD_REQUEST, f'Procedure "{path}" takes no input')
    if raw is None:
        if default is not None:
            return default
        raise TRPCError(ErrorCode.BAD_REQUEST, f'Procedure "{path}" needs an input, and none was sent')
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        if default is not None and bytes(raw).strip() == b"null":
            return default
        raise TRPCError(ErrorCode.BAD_REQUEST, str(exc), exc) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _not_json(exc) from None


def with_last_event_id(raw: RawInput | None, last_event_id: str) -> RawInput | None:
    """The input with ``lastEventId`` set, as tRPC does for a subscription resumed by an EventSource.

    An input that is not an object is left alone: decoding then reports what is wrong with it.
    """
    value = {} if raw is None else _decode_any(raw)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return raw
    value[LAST_EVENT_ID] = last_event_id
    return _any_encoder.encode(value)


def only_last_event_id(raw: RawInput | None) -> bool:
    """Whether the input is ``{"lastEventId": ...}`` alone: what @trpc/client sends when it resumes a subscription
    that takes no input."""
    if raw is None:
        return False
    value = _decode_any(raw)
    return isinstance(value, dict) and set(value) == {LAST_EVENT_ID}


def _decode_any(raw: RawInput) -> Any:
    try:
        return _any_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _not_json(exc) from None


def _not_json(exc: msgspec.DecodeError | RecursionError) -> TRPCError:
    """PARSE_ERROR for an input msgspec cannot parse: malformed JSON, or nested deeper than the decoder recurses."""
    detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
    return TRPCError(ErrorCode.PARSE_ERROR, f"Input is not valid JSON: {detail}", exc)
