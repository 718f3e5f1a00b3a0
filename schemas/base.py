"""The two bases of every wire type: camelCase on the wire, keyword-only, frozen.

They differ in what they do with a field they do not declare. An input rejects it, so a typo in a request is a
BAD_REQUEST naming the field. An output ignores it, so a server may add a field to a response (an additive,
backwards-compatible change) without breaking the clients already deployed, which decode with these same Structs.
A Struct that appears in both an input and an output is a ``WireInput``: requests stay strict.
"""

from __future__ import annotations

import msgspec


class WireInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of procedure inputs and of the Structs nested in them: unknown fields are rejected.

    ``kw_only`` is not inherited by msgspec, so every subclass repeats ``kw_only=True``.
    """


class WireOutput(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """Base of procedure outputs, subscription events and the Structs nested only in them: unknown fields are ignored.

    ``kw_only`` is not inherited by msgspec, so every subclass repeats ``kw_only=True``.
    """
