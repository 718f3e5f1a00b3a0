"""Deterministic structured output, so procedures that expect JSON work against the offline simulator.

The generated value is the smallest obvious instance of the schema: strings are ``"simulated"`` (or a valid
value for a known ``format``), numbers are 1, booleans true, arrays hold one item, enums and ``anyOf`` take their
first choice, objects carry their required properties. Local ``$ref`` pointers (``#/$defs/...``, as
``msgspec.json.schema`` writes them) are followed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

SCHEMA_LINE: Final = re.compile(r"^[ \t]*JSON schema:[ \t]*", re.MULTILINE)
SIMULATED_STRING: Final = "simulated"

_STRING_FORMATS: Final[dict[str, str]] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "PT0S",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "simulated@example.com",
    "uri": "https://example.com/simulated",
    "decimal": "1",
}
_JSON_DECODER: Final = json.JSONDecoder()


def schema_in_text(text: str) -> dict[str, Any] | None:
    """The JSON Schema that follows a ``JSON schema:`` line, or None; the JSON may span several lines."""
    match = SCHEMA_LINE.search(text)
    if match is None:
        return None
    try:
        schema, _ = _JSON_DECODER.raw_decode(text, match.end())
    except json.JSONDecodeError:
        return None
    return schema if isinstance(schema, dict) else None


def minimal_instance(schema: Mapping[str, Any]) -> Any:
    return _instance(schema, schema)


def _instance(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    if "$ref" in schema:
        return _instance(_resolve(schema["$ref"], root), root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        if schema.get(combinator):
            return _instance(_first_not_null(schema[combinator]), root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part["$ref"], root) if "$ref" in part else part)
        return _instance(merged, root)
    kind = _kind(schema)
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        return {name: _instance(properties.get(name, {"type": "string"}), root) for name in schema.get("required", ())}
    if kind == "array":
        count = 0 if schema.get("maxItems") == 0 else max(1, schema.get("minItems", 1))
        prefix: list[Mapping[str, Any]] = schema.get("prefixItems", [])
        items: Mapping[str, Any] = schema.get("items") or {"type": "string"}
        return [_instance(prefix[i] if i < len(prefix) else items, root) for i in range(count)]
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    return None


def _kind(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if kinds else "null"
    if isinstance(kind, str):
        return kind
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "object"


def _first_not_null(choices: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    for choice in choices:
        if choice.get("type") != "null":
            return choice
    return choices[0]


def _resolve(pointer: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not pointer.startswith("#"):
        raise ValueError(f"only local $ref pointers are supported, got {pointer!r}")
    target: Any = root
    for part in filter(None, pointer[1:].split("/")):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    resolved: Mapping[str, Any] = target
    return resolved


def _string(schema: Mapping[str, Any]) -> str:
    if schema.get("contentEncoding") == "base64":
        return "c2ltdWxhdGVk"
    value = _STRING_FORMATS.get(schema.get("format", ""), SIMULATED_STRING)
    min_length: int = schema.get("minLength", 0)
    if len(value) < min_length:
        value = (value * (min_length // len(value) + 1))[:min_length]
    max_length: int | None = schema.get("maxLength")
    return value if max_length is None else value[:max_length]


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: int | float = 1
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        value = schema["exclusiveMinimum"] + 1
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - 1
    if integer and isinstance(value, float):
        value = int(value)
    return value
