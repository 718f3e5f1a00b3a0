"""Reading a request's raw inputs (``?input=`` or the body, single or batched) and decoding one call's input.

Decoding is validation: the msgspec decoder built once per procedure rejects wrong types, unknown and missing fields,
and its message names the field by its wire (camelCase) name, e.g. ``Expected `int`, got `str` - at `$.maxTokens```.
For a field of fixed values (a ``Literal`` or an ``Enum``) the message also names the values allowed, which msgspec's
own (``Invalid enum value 'x'``) does not: ``Expected one of 'hour', 'day', 'week', 'month', got 'x' - at
`$.granularity```.
Input that is not JSON, or JSON nested deeper than msgspec recurses (it raises ``RecursionError``), is PARSE_ERROR.
"""

from __future__ import annotations

import enum
import re
import types
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

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
        raise TRPCError(ErrorCode.BAD_REQUEST, _invalid_input_message(decoder.type, str(exc)), exc) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _not_json(exc) from None


_INVALID_VALUE: Final = re.compile(
    r"^(?:Invalid enum value (?P<value>.*)|Expected `[^`]*`, got (?P<type>`[^`]*`)) - at `(?P<path>\$[^`]*)`$"
)
_PATH_STEP: Final = re.compile(r"\.([^.\[]+)|\[[^\]]*\]")


def _invalid_input_message(input_type: Any, message: str) -> str:
    """msgspec's ``message``, naming the allowed values when it is about a field of fixed values."""
    match = _INVALID_VALUE.match(message)
    if match is None:
        return message
    allowed = _allowed_values(input_type, match["path"])
    if not allowed:
        return message
    got = match["value"] if match["value"] is not None else match["type"]
    return f"Expected one of {allowed}, got {got} - at `{match['path']}`"


@cache
def _allowed_values(input_type: Any, path: str) -> str | None:
    """The values the field at ``path`` (msgspec's ``$.a[0].b``) of ``input_type`` may take, in the order they are
    declared and spelt as msgspec spells them (``'day', 'week' or null``); None unless the field is a ``Literal``
    or an ``Enum``, possibly nullable."""
    types = [input_type]
    for step in _PATH_STEP.finditer(path.removeprefix("$")):
        types = [child for tp in types for child in _children(tp, step[1])]
    values: list[Any] = []
    nullable = False
    for leaf in (leaf for tp in types for leaf in _members(tp)):
        if get_origin(leaf) is Literal:
            values += get_args(leaf)
        elif isinstance(leaf, type) and issubclass(leaf, enum.Enum):
            values += [member.value for member in leaf]
        elif leaf is type(None):
            nullable = True
        else:
            return None
    if not values:
        return None
    spelt = ", ".join(repr(value) for value in dict.fromkeys(values))
    return f"{spelt} or null" if nullable else spelt


def _members(tp: Any) -> list[Any]:
    """The types a value of ``tp`` may have: ``Annotated`` unwrapped, unions flattened."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _members(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [leaf for member in get_args(tp) for leaf in _members(member)]
    return [tp]


def _children(tp: Any, field: str | None) -> list[Any]:
    """What one step of a path leads to from ``tp``: a field by its wire name, or (``field`` None) an item."""
    children: list[Any] = []
    for member in _members(tp):
        origin, args = get_origin(member), get_args(member)
        if field is not None and isinstance(member, type) and issubclass(member, msgspec.Struct):
            children += [f.type for f in msgspec.structs.fields(member) if f.encode_name == field]
        elif field is None and origin in (list, set, frozenset) and args:
            children.append(args[0])
        elif field is None and origin is tuple:
            children += [arg for arg in args if arg is not Ellipsis]
        elif field is None and origin is dict and args:
            children.append(args[1])
    return children


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
