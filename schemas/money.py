"""Money on the wire: US dollars as an exact decimal, written as a plain decimal string.

One format for every amount, so that clients can compare, store and format money without special cases: no
exponent (one gpt-4o-mini input token costs ``"0.00000015"``, never ``"1.5E-7"``), no trailing zeros (``"0.00001"``,
never ``"0.0000100"``), ``"0"`` for zero, a ``-`` only for a negative amount (an adjustment).

``Money`` is a ``Decimal`` subclass, so it computes like one; arithmetic returns plain ``Decimal``, and mypy then
insists on an explicit ``Money(...)`` before a result goes into a wire field. msgspec does not encode ``Decimal``
subclasses natively: the hooks in ``schemas.codec`` encode, decode and describe ``Money`` (encoders and decoders
built without them raise ``TypeError`` rather than send another format).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

__all__ = ("MONEY_PATTERN", "Money", "format_money", "parse_money")

MONEY_PATTERN: Final = r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"
"""The one spelling of an amount on the wire: ``0``, ``12``, ``0.00325``, ``-1.5``."""
_ACCEPTED: Final = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


class Money(Decimal):
    """An exact amount of US dollars; ``str()`` is its wire spelling (``"0.00000015"``)."""

    __slots__ = ()

    def __str__(self) -> str:
        return format_money(self)

    def __repr__(self) -> str:
        return f"Money('{format_money(self)}')"


def format_money(value: Decimal) -> str:
    """``value`` as a plain decimal string without trailing zeros; exact (nothing is rounded)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def parse_money(text: str) -> Money:
    """An amount as a client sends it: digits with an optional sign and fraction (trailing zeros are accepted).

    Raises ``ValueError`` for anything else (exponents, ``NaN``, ``Infinity``, spaces, a leading ``+``).
    """
    if not _ACCEPTED.match(text):
        raise ValueError(f"expected an amount of USD as a decimal string such as '0.25', got {text!r}")
    return Money(text)
