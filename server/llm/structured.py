"""Structured output: the JSON Schema a model is asked to follow, and reading its JSON answer back."""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

_FENCE: Final = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def object_schema(struct_type: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of ``struct_type`` with the object at its root.

    msgspec puts every Struct in ``$defs`` behind a root ``$ref``; providers' structured-output modes want the root
    to be the object itself (OpenAI rejects a bare ``$ref`` root).
    """
    schema = msgspec.json.schema(struct_type)
    definitions: dict[str, Any] = dict(schema.get("$defs", {}))
    root_name = schema["$ref"].rsplit("/", 1)[1]
    root = dict(definitions.pop(root_name))
    if definitions:
        root["$defs"] = definitions
    return root


def strip_code_fence(text: str) -> str:
    """Models asked for JSON sometimes wrap it in a Markdown code fence; the JSON inside is what was asked for."""
    match = _FENCE.match(text)
    return match["body"] if match else text
