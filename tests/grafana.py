"""What Grafana does to a panel's query before it reaches a data source, so that a test can run the dashboard's
queries exactly as Grafana would send them.

``expand_postgres_macros`` follows Grafana's PostgreSQL data source (``pkg/tsdb/grafana-postgresql-datasource/
macros.go``, TimescaleDB off): one regular expression ``$name(args)`` whose arguments hold no ``)``, arguments split on
``,`` and trimmed of spaces, times in UTC as Go's RFC 3339 with nanoseconds (``2026-11-29T15:00:00Z``, fraction
without trailing zeros), and a ``$__timeGroup`` immediately followed by ``,`` aliased ``AS "time"`` as before Grafana
5.3. Interval seconds are printed as Go's ``%v`` prints a float64 (``strconv.FormatFloat(f, 'g', -1, 64)``: shortest
digits, ``86400`` but ``1.2096e+06`` from 1e6 on).

``expand_prometheus_variables`` substitutes the dashboard variables Grafana fills into PromQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

__all__ = ("expand_postgres_macros", "expand_prometheus_variables", "go_float", "parse_interval", "rfc3339_nano")

_MACRO: Final = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_INTERVAL: Final = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNITS: Final = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def rfc3339_nano(at: datetime) -> str:
    """Go's ``t.UTC().Format(time.RFC3339Nano)`` for a time of microsecond precision."""
    utc = at.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def go_float(value: float) -> str:
    """Go's ``fmt.Sprintf("%v", value)`` for a finite float64."""
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    if digits == (0,):
        return "-0" if sign else "0"
    mantissa = "".join(map(str, digits))
    point = len(mantissa) + exponent  # the decimal point's position in ``mantissa``
    scientific = point - 1
    prefix = "-" if sign else ""
    if scientific < -4 or scientific >= 6:
        fraction = f".{mantissa[1:]}" if len(mantissa) > 1 else ""
        return f"{prefix}{mantissa[0]}{fraction}e{'-' if scientific < 0 else '+'}{abs(scientific):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{mantissa}"
    if point >= len(mantissa):
        return f"{prefix}{mantissa}{'0' * (point - len(mantissa))}"
    return f"{prefix}{mantissa[:point]}.{mantissa[point:]}"


def parse_interval(text: str) -> timedelta:
    """An interval as Grafana's ``gtime.ParseInterval`` reads the simple forms (``20ms``, ``5m``, ``1d``, ``1w``)."""
    match = _INTERVAL.match(text)
    if match is None:
        raise ValueError(f"unsupported interval {text!r}")
    return int(match[1]) * _UNITS[match[2]]


def expand_postgres_macros(sql: str, start: datetime, end: datetime) -> str:
    """``sql`` with Grafana's PostgreSQL macros expanded for the time range ``[start, end]``; an unknown macro or
    a missing argument raises ``ValueError`` (Grafana fails the query)."""
    start_text, end_text = rfc3339_nano(start), rfc3339_nano(end)

    def time_group(args: list[str]) -> str:
        if len(args) < 2:
            raise ValueError("$__timeGroup needs a time column and an interval")
        seconds = go_float(parse_interval(args[1].strip("'")).total_seconds())
        return f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"

    def column(name: str, args: list[str]) -> str:
        if not args or not args[0]:
            raise ValueError(f"missing time column argument for macro {name}")
        return args[0]

    macros: dict[str, Callable[[list[str]], str]] = {
        "__time": lambda args: f'{column("__time", args)} AS "time"',
        "__timeEpoch": lambda args: f'extract(epoch from {column("__timeEpoch", args)}) as "time"',
        "__timeFilter": lambda args: f"{column('__timeFilter', args)} BETWEEN '{start_text}' AND '{end_text}'",
        "__timeFrom": lambda args: f"'{start_text}'",
        "__timeTo": lambda args: f"'{end_text}'",
        "__timeGroup": time_group,
        "__timeGroupAlias": lambda args: time_group(args) + ' AS "time"',
        "__unixEpochFilter": lambda args: (
            f"{column('__unixEpochFilter', args)} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
        ),
    }

    def expand(match: re.Match[str]) -> str:
        name = match[1]
        # Before 5.3, $__timeGroup added the alias itself: Grafana still does when a ',' follows the first occurrence.
        if name == "__timeGroup":
            index = sql.find(match[0]) + len(match[0])
            if sql[index : index + 1] == ",":
                name = "__timeGroupAlias"
        if name not in macros:
            raise ValueError(f"unknown macro {name!r}")
        return macros[name]([arg.strip(" ") for arg in match[2].split(",")])

    return _MACRO.sub(expand, sql)


def expand_prometheus_variables(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with Grafana's ``$name`` / ``${name}`` variables replaced (longest names first, so ``$__rate_interval``
    is not read as ``$__rate``); an unknown variable raises ``ValueError``."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    if "$" in expr:
        raise ValueError(f"an unknown variable is left in {expr!r}")
    return expr
