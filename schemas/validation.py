"""Input checks shared by the read procedures: time windows, IANA time zones and opaque page cursors.

The checks run in ``__post_init__`` of the input Structs, so they apply the same way to a decoded request (msgspec
turns the ``ValueError`` into a ``ValidationError``, i.e. BAD_REQUEST) and to a Struct built in Python (the caller
gets the ``InvalidInput`` itself, with the offending field's wire name).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Annotated, Final, TypeAlias
from zoneinfo import ZoneInfo, available_timezones

import msgspec

__all__ = (
    "AwareDatetime",
    "Cursor",
    "DateOrTime",
    "DateOrTimeValue",
    "InvalidInput",
    "Position",
    "TimeZoneName",
    "check_time",
    "check_time_zone",
    "check_window",
    "decode_cursor",
    "encode_cursor",
    "local_midnight",
    "parse_date_or_time",
    "resolve_date_or_time",
)

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A point in time; a datetime without an offset is rejected rather than guessed.

msgspec accepts any year from 1 to 9999 with any offset, so a Struct with such a field checks it with ``check_time``
(``check_window`` does) in ``__post_init__``: a time that cannot be converted to UTC, or that the database and the
time-zone arithmetic cannot handle, is BAD_REQUEST rather than an overflow in the query."""


class DateOrTimeValue(datetime):
    """A bound as it came off the wire: a date alone (held naive, at midnight) or a time with an offset.

    Only the codec makes these (``parse_date_or_time``); ``resolve_date_or_time`` turns one into a time.
    """

    __slots__ = ()


if TYPE_CHECKING:
    DateOrTime: TypeAlias = datetime | date
else:
    DateOrTime = DateOrTimeValue
"""A bound of a calendar window: a date alone (``"2026-11-01"``: that day's midnight in the request's ``timeZone``)
or a time with an offset (``"2026-11-01T09:30:00+01:00"``). A time without an offset is still refused: its zone
would be a guess. In Python, pass a ``date`` or an aware ``datetime``; the input's ``bounds()`` gives the times.

Type checkers see ``datetime | date``; msgspec sees ``DateOrTimeValue``, decoded by the hook in ``schemas.codec``
(msgspec refuses a union of two string types), so each value holds what the wire said until it is resolved."""

_DATE_ONLY: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

TimeZoneName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["Europe/Berlin", "UTC"])]
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]
"""An opaque position in a list, as returned in ``nextCursor``: pass it back unchanged for the next page."""

EARLIEST_YEAR: Final = 1970
LATEST_YEAR: Final = 9000
"""Times outside these years (in UTC) are rejected: no usage predates 1970, and 9000 leaves room for any calendar
bucket or offset to be computed without reaching Python's ``datetime.max`` (year 9999)."""

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
        position = _position_decoder.decode(base64.urlsafe_b64decode(padded))
        check_time(position.at, field)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput(field, f"`{field}` is not a cursor this server returned") from None
    return position


def check_time(value: datetime, field: str) -> None:
    """``value`` (with an offset) must fall in the years ``EARLIEST_YEAR`` to ``LATEST_YEAR`` once converted to UTC."""
    try:
        year = value.astimezone(UTC).year
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+14:00 is in year 0 in UTC
        year = None
    if year is None or not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise InvalidInput(field, f"`{field}` must be a time in the years {EARLIEST_YEAR} to {LATEST_YEAR} (UTC)")


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _AMBIGUOUS_ZONES


def check_time_zone(name: str, field: str = "timeZone") -> None:
    if name not in _known_zones():
        raise InvalidInput(field, f"`{field}` must be an IANA time zone name such as 'Europe/Berlin', got {name!r}")


def parse_date_or_time(text: str) -> DateOrTimeValue:
    """A date alone (``2026-11-01``) or an RFC 3339 time with an offset; raises ``ValueError`` for anything else."""
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"Invalid date {text!r}") from None
        return DateOrTimeValue(day.year, day.month, day.day)
    try:
        moment = msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        raise ValueError("Expected a date (2026-11-01) or a time with an offset (2026-11-01T09:30:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError("A time needs an offset (Z or +01:00); a date alone (2026-11-01) means its midnight")
    return DateOrTimeValue.combine(moment.date(), moment.timetz())


def resolve_date_or_time(value: DateOrTime, time_zone: str, field: str) -> datetime:
    """``value`` as a time: a date is its midnight in ``time_zone`` (the day's first instant, when a clock change
    skips midnight); a time must carry an offset. Raises ``InvalidInput`` for a time without one."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return datetime.combine(value.date(), value.timetz())  # a plain datetime, whatever came in
        if not isinstance(value, DateOrTimeValue):
            raise InvalidInput(field, f"`{field}` needs an offset (Z or +01:00), or a date alone")
        value = value.date()
    return local_midnight(value, time_zone)


def local_midnight(day: date, time_zone: str) -> datetime:
    """The first instant of ``day`` in ``time_zone``, with the offset in force then: where a clock change skips
    midnight (``America/Santiago``, 2026-09-06) that is 01:00, not a time that never happened."""
    zone = ZoneInfo(time_zone)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC).astimezone(zone)


def check_window(
    start: datetime | None,
    end: datetime | None,
    *,
    longest: timedelta | None = None,
) -> None:
    """``start`` must come before ``end`` (the window is ``[start, end)``), and span at most ``longest``; both must
    pass ``check_time``."""
    if start is not None:
        check_time(start, "start")
    if end is not None:
        check_time(end, "end")
    if start is None or end is None:
        return
    if start >= end:
        raise InvalidInput("end", "`end` must be after `start`")
    if longest is not None and end - start > longest:
        raise InvalidInput("end", f"`end` may be at most {longest.days} days after `start`")
