"""The console's tables: sorting and paging what a query helper returned, and its CSV export.

A table shows rows a query helper returned (the very Structs an ``admin.*`` procedure answers with); the CSV export
of a table is those rows as the procedure's JSON spells them, flattened: a nested object's fields become columns
named by their path (``tokens.cacheRead``), a list is one cell holding its JSON, null an empty cell. So the export
and the procedure agree field for field, money included (the plain decimal strings of the wire); only a text that a
spreadsheet would run as a formula (``=``, ``+``, ``@``...) gets a ``'`` before it.
"""

from __future__ import annotations

import csv
import io
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec

from schemas import codec

__all__ = ("PAGE_SIZE", "Column", "Table", "csv_of", "wire_columns")

PAGE_SIZE: Final = 50
Kind = Literal["text", "int", "money", "time", "ratio"]

_ENCODER: Final = codec.encoder()
_FORMULA_STARTS: Final = ("=", "+", "@", "\t", "\r")
"""A cell beginning so is shown with a ``'`` before it, and so is one beginning with ``-`` that is not a number (a
negative amount, an adjustment, begins with it too)."""
_NUMBER: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Column:
    """``key`` names the column in ``?sort=``; ``value`` reads the shown value from a row; ``link`` an optional URL."""

    key: str
    label: str
    value: Callable[[Any], Any]
    kind: Kind = "text"
    link: Callable[[Any], str | None] | None = None


@dataclass(slots=True)
class Table:
    """``rows`` as the helper returned them (its order is the procedure's); ``sort``/``page`` as the page asked."""

    name: str
    title: str
    columns: Sequence[Column]
    rows: Sequence[Any]
    row_type: type[msgspec.Struct]
    sort: str | None = None
    descending: bool = True
    page: int = 1
    page_size: int = PAGE_SIZE
    next_cursor: str | None = None
    note: str | None = None
    shown: list[Any] = field(default_factory=list)

    def arrange(self, query: Mapping[str, str]) -> Table:
        """Sort by ``sort_<name>`` (``-key`` descending) and cut out page ``page_<name>``, from the query string."""
        sort = query.get(f"sort_{self.name}")
        column = next((c for c in self.columns if sort and c.key == sort.lstrip("-")), None)
        rows = list(self.rows)
        if column is not None and sort is not None:
            self.sort, self.descending = column.key, sort.startswith("-")
            present = [row for row in rows if column.value(row) is not None]
            missing = [row for row in rows if column.value(row) is None]
            present.sort(key=lambda row: _sort_key(column.value(row)), reverse=self.descending)
            rows = present + missing  # unknown (an unpriced cost) last either way
        pages = max(1, -(-len(rows) // self.page_size))
        page = query.get(f"page_{self.name}", "1")
        self.page = min(max(1, int(page)), pages) if page.isdigit() else 1
        self.shown = rows[(self.page - 1) * self.page_size : self.page * self.page_size]
        return self

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.rows) // self.page_size))


def _sort_key(value: Any) -> Any:
    if isinstance(value, Decimal | int | float):
        return (0, Decimal(value) if not isinstance(value, float) else Decimal(repr(value)), "")
    return (1, Decimal(0), str(value).lower())


def _struct_type(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct in ``annotation`` (``X`` or ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for member in typing.get_args(annotation):
            found = _struct_type(member)
            if found is not None:
                return found
    if typing.get_origin(annotation) is typing.Annotated:
        return _struct_type(typing.get_args(annotation)[0])
    return None


def wire_columns(row_type: type[msgspec.Struct], prefix: str = "") -> list[str]:
    """The CSV header of ``row_type``: its wire field names, nested Structs flattened into ``path.field``."""
    hints = typing.get_type_hints(row_type, include_extras=True)
    names: list[str] = []
    for info in msgspec.structs.fields(row_type):
        nested = _struct_type(hints[info.name])
        name = prefix + info.encode_name
        names.extend(wire_columns(nested, name + ".") if nested is not None else [name])
    return names


def _flatten(value: Any, prefix: str, into: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}.", into)
        return
    name = prefix[:-1]
    if value is None:
        into[name] = ""
    elif isinstance(value, list):
        into[name] = msgspec.json.encode(value).decode()
    elif isinstance(value, bool):
        into[name] = "true" if value else "false"
    elif isinstance(value, str) and (
        value.startswith(_FORMULA_STARTS) or (value.startswith("-") and not _NUMBER.fullmatch(value))
    ):
        into[name] = "'" + value  # text a spreadsheet would run as a formula (a conversation's title is user text)
    else:
        into[name] = str(value)


def flatten_wire(value: Any) -> dict[str, str]:
    """A wire object (decoded JSON) as CSV cells by column name."""
    cells: dict[str, str] = {}
    _flatten(value, "", cells)
    return cells


def csv_of(rows: Sequence[msgspec.Struct], row_type: type[msgspec.Struct]) -> str:
    """``rows`` as the procedure's JSON spells them, one line each, in their order, under ``wire_columns``."""
    header = wire_columns(row_type)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = flatten_wire(msgspec.json.decode(_ENCODER.encode(row)))
        writer.writerow([cells.get(name, "") for name in header])
    return out.getvalue()
