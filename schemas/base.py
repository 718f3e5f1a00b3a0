"""The one base for every wire type: camelCase on the wire, unknown fields rejected, keyword-only."""

from __future__ import annotations

import msgspec


class WireStruct(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every request and response Struct.

    ``kw_only`` is not inherited by msgspec, so every subclass repeats ``kw_only=True``.
    """
