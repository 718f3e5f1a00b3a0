"""Money as it leaves the service: exact ``Decimal`` without trailing zeros.

NUMERIC(38, 18) columns hand back ``0.003250000000000000`` and ``0E-18``; the same values read ``0.00325`` and ``0``
on the wire. Only zeros are dropped, so no value changes. Amounts below 0.000001 keep Python's exponent form
(``5E-8``), which every decimal library parses.
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Final

_EXACT: Final = Context(prec=38, traps=[Inexact, InvalidOperation])
_ONE: Final = Decimal(1)


def tidy(value: Decimal) -> Decimal:
    """``value`` without trailing zeros, and without an exponent for whole numbers (``100``, not ``1E+2``)."""
    value = value.normalize(_EXACT)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        value = value.quantize(_ONE, context=_EXACT)
    return value


def decode_numeric(text: str) -> Decimal:
    """asyncpg's decoder for NUMERIC in text format: the value, tidied."""
    return tidy(Decimal(text))
