"""Input checks shared by the read procedures: time windows, IANA time zones and opaque page cursors.

The checks run in ``__post_init__`` of the input Structs, so they apply the same way to a decoded request (msgspec
turns the ``ValueError`` into a ``ValidationError``, i.e. BAD_REQUEST) and to a Struct built in Python (the caller
gets the ``InvalidInput`` itself, with the offending field's wire name).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timedelta
from functools import cache
from typing import Annotated, Final
from zoneinfo import available_timezones

import msgspec

__all__ = (
    "AwareDatetime",
    "Cursor",
    "InvalidInput",
    "Position",
    "TimeZoneName",
    "check_time_zone",
    "check_window",
    "decode_cursor",
    "encode_cursor",
)

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A point in time; a datetime without an offset is rejected rather than guessed."""
TimeZoneName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["Europe/Berlin", "UTC"])]
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]
"""An opaque position in a list, as returned in ``nextCursor``: pass it back unchanged for the next page."""

# Names that exist in the zone database but mean different things on different hosts.
_AMBIGUOUS_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})


class InvalidInput(ValueError):
    """An input that is well formed but not acceptable; ``field`` is its wire (camelCase) name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Position(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Where a page ended in a list ordered by ``(at, id)``: the next page starts strictly after it."""

    at: AwareDatetime
    id: uuid.UUID


_position_decoder: Final = msgspec.json.Decoder(Position)


def encode_cursor(position: Position) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "cursor") -> Position:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return _position_decoder.decode(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput(field, f"`{field}` is not a cursor this server returned") from None


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _AMBIGUOUS_ZONES


def check_time_zone(name: str, field: str = "timeZone") -> None:
    if name not in _known_zones():
        raise InvalidInput(field, f"`{field}` must be an IANA time zone name such as 'Europe/Berlin', got {name!r}")


def check_window(
    start: datetime | None,
    end: datetime | None,
    *,
    longest: timedelta | None = None,
) -> None:
    """``start`` must come before ``end`` (the window is ``[start, end)``), and span at most ``longest``."""
    if start is None or end is None:
        return
    if start >= end:
        raise InvalidInput("end", "`end` must be after `start`")
    if longest is not None and end - start > longest:
        raise InvalidInput("end", f"`end` may be at most {longest.days} days after `start`")
