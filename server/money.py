"""Exact amounts inside the service: ``tidy`` for computed prices, ``decode_numeric`` for what PostgreSQL returns.

NUMERIC(38, 18) columns hand back ``0.003250000000000000`` and ``0E-18``: they are read as ``schemas.money.Money``,
the same exact values, which reach the wire as ``"0.00325"`` and ``"0"`` (``schemas.money`` spells every amount).
Prices computed here are ``tidy``: without trailing zeros, so that rates and costs stored per usage row stay short.
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Final

from schemas.money import Money

_EXACT: Final = Context(prec=38, traps=[Inexact, InvalidOperation])
_ONE: Final = Decimal(1)


def tidy(value: Decimal) -> Decimal:
    """``value`` without trailing zeros, and without an exponent for whole numbers (``100``, not ``1E+2``)."""
    value = value.normalize(_EXACT)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        value = value.quantize(_ONE, context=_EXACT)
    return value


def decode_numeric(text: str) -> Money:
    """asyncpg's decoder for NUMERIC in text format: the exact value, as ``Money``."""
    return Money(text)
