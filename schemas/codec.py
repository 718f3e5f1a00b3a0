"""The one place where wire types meet JSON: encoders, decoders and JSON schemas that know ``Money`` and
``DateOrTime``.

Server and clients build every encoder, decoder and schema of wire types here, so that an amount is spelt the same
way in a response, a request, an OpenAPI document and the TypeScript types. Build them once and reuse them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, Literal, TypeVar

import msgspec

from schemas.money import MONEY_PATTERN, Money, format_money, parse_money
from schemas.validation import DateOrTimeValue, parse_date_or_time

__all__ = ("DATE_OR_TIME_SCHEMA", "MONEY_SCHEMA", "decoder", "encoder", "json_schema", "json_schema_components")

T = TypeVar("T")

MONEY_SCHEMA: Final = {
    "type": "string",
    "format": "decimal",
    "pattern": MONEY_PATTERN,
    "examples": ["0.00325", "0.00000015", "0"],
}
"""``Money`` in JSON schema: a plain decimal string, USD."""
DATE_OR_TIME_SCHEMA: Final = {
    "type": "string",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ].+)?$",
    "examples": ["2026-11-01", "2026-11-01T09:30:00+01:00"],
}
"""``DateOrTime`` in JSON schema: an ISO 8601 date (``format: date``) or an RFC 3339 time with an offset
(``format: date-time``); JSON schema has no format for "either"."""


def _enc_hook(value: Any) -> Any:
    if type(value) is Money:
        return format_money(value)
    if type(value) is DateOrTimeValue:  # as msgspec writes a date, or a time
        return value.date() if value.tzinfo is None else datetime.combine(value.date(), value.timetz())
    raise NotImplementedError(f"{type(value).__name__} is not a wire type")


def _dec_hook(type_: type[Any], value: Any) -> Any:
    if type_ is Money:
        if isinstance(value, str):
            return parse_money(value)
        # A TypeError, not a ValidationError: msgspec then adds the field's path (``- at `$.limitUsd```).
        raise TypeError(f"Expected an amount as a decimal string, got `{type(value).__name__}`")
    if type_ is DateOrTimeValue:
        if isinstance(value, str):
            return parse_date_or_time(value)
        raise TypeError(f"Expected a date or a time as a string, got `{type(value).__name__}`")
    raise NotImplementedError(f"{type_.__name__} is not a wire type")


def _schema_hook(type_: type[Any]) -> dict[str, Any]:
    if type_ is Money:
        return dict(MONEY_SCHEMA)
    if type_ is DateOrTimeValue:
        return dict(DATE_OR_TIME_SCHEMA)
    raise NotImplementedError(f"{type_.__name__} is not a wire type")


def encoder(*, order: Literal["deterministic"] | None = None) -> msgspec.json.Encoder:
    """A JSON encoder for wire values. ``order="deterministic"``: the same value always encodes to the same bytes
    (the keys of every mapping sorted; struct fields stay in declaration order), for hashing a request."""
    return msgspec.json.Encoder(enc_hook=_enc_hook, order=order)


def decoder(type_: type[T]) -> msgspec.json.Decoder[T]:
    """A JSON decoder (and validator) for ``type_``; an amount must be a plain decimal string."""
    return msgspec.json.Decoder(type_, dec_hook=_dec_hook)


def json_schema(type_: Any) -> dict[str, Any]:
    """msgspec's JSON schema of ``type_``, with ``Money`` as ``MONEY_SCHEMA``."""
    return msgspec.json.schema(type_, schema_hook=_schema_hook)


def json_schema_components(
    types: Iterable[Any], ref_template: str = "#/$defs/{name}"
) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """msgspec's ``schema_components`` of ``types``, with ``Money`` as ``MONEY_SCHEMA``."""
    return msgspec.json.schema_components(types, schema_hook=_schema_hook, ref_template=ref_template)
