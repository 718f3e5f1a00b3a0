"""The usage reads: what a conversation cost and why, where the money goes over time, by model, procedure and user,
which calls failed, and what a user spent (``chat.getMyUsage``).

Plain async functions over hand-written SQL, usable from Python as well as behind the ``admin.*`` procedures. Each
takes the ``Database`` and its procedure's input Struct (whose ``__post_init__`` has already validated it) and returns
the output Struct.

Aggregates over a window read whole 15-minute periods from ``ai_usage_rollup`` (kept exact by triggers, see the
migration that creates it) and only the partial periods at the window's edges from ``ai_usage_logs``, so their cost
depends on the window's length, not on the number of calls in it.

``ai_usage_rollup`` has no user column: per-user reads go to ``ai_usage_logs`` through its ``(user_id, created_at)``
index, so they cost what the user's calls in the window number.

Sums are exact: tokens as integers, money as NUMERIC summed by PostgreSQL and returned as ``Decimal``. Unpriced calls
(NULL cost) add to ``unpricedCalls`` and the tokens, never to ``costUsd`` as a zero; a group whose calls are all
unpriced has a null ``costUsd`` (``group_cost``) and sorts after the priced ones. Filters are assembled from the
parameters actually given, so every variant is its own prepared statement with its own plan (an ``$1 IS NULL OR``
filter would defeat the indexes once PostgreSQL switches to a generic plan).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypedDict
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from schemas.admin import (
    BucketCosts,
    BucketRates,
    CacheFigures,
    CacheStats,
    CacheStatsInput,
    ConversationCost,
    ConversationCostInput,
    DailyCacheStats,
    DateBucket,
    ErrorTypeCount,
    FailedCalls,
    FailedCallsInput,
    Granularity,
    ModelUsage,
    MyUsage,
    MyUsageInput,
    ProcedureCacheStats,
    ProcedureUsage,
    TopConversation,
    TopConversations,
    TopConversationsInput,
    UnpricedCalls,
    UnpricedCallsInput,
    UnpricedModel,
    UsageByDateRange,
    UsageByDateRangeInput,
    UsageByModel,
    UsageByModelInput,
    UsageByProcedure,
    UsageByProcedureInput,
    UsageByUser,
    UsageByUserInput,
    UsageFigures,
    UsageRow,
    UserUsage,
    bucket_start,
)
from schemas.money import Money
from schemas.usage import ReportedTokens, TokenCounts, Usage, group_cost
from schemas.validation import Position, decode_cursor, encode_cursor
from server.conversations import CONVERSATION_COLUMNS, model_shares, totals_from_row
from server.database import Database
from server.errors import ConversationNotFoundError

__all__ = (
    "GROUPS",
    "ROLLUP_PERIOD",
    "BucketShare",
    "get_cache_stats",
    "get_failed_calls",
    "get_my_usage",
    "get_top_conversations_by_cost",
    "get_unpriced_calls",
    "get_usage_by_conversation",
    "get_usage_by_date_range",
    "get_usage_by_date_range_and_group",
    "get_usage_by_model",
    "get_usage_by_procedure",
    "get_usage_by_user",
)

ROLLUP_PERIOD: Final = timedelta(minutes=15)
"""The period of ``ai_usage_rollup`` (``date_bin('15 minutes', created_at, '2000-01-01 UTC')``)."""
_PERIOD_ORIGIN: Final = datetime(2000, 1, 1, tzinfo=UTC)

_TOKEN_SUMS: Final = """
    coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
    coalesce(sum(cache_read_tokens), 0)::bigint AS cache_read_tokens,
    coalesce(sum(cache_write_5m_tokens), 0)::bigint AS cache_write_5m_tokens,
    coalesce(sum(cache_write_1h_tokens), 0)::bigint AS cache_write_1h_tokens,
    coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
    coalesce(sum(reasoning_tokens), 0)::bigint AS reasoning_tokens,
    coalesce(sum(output_image_tokens), 0)::bigint AS output_image_tokens"""

_FIGURES: Final = f"""
    count(*) AS calls,
    count(*) FILTER (WHERE status = 'error') AS error_calls,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled_calls,
    count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_calls,
    {_TOKEN_SUMS},
    coalesce(sum(estimated_cost_usd), 0) AS cost_usd"""

_ROLLUP_FIGURES: Final = """
    sum(calls) AS calls, sum(error_calls) AS error_calls, sum(cancelled_calls) AS cancelled_calls,
    sum(unpriced_calls) AS unpriced_calls, sum(input_tokens) AS input_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_5m_tokens) AS cache_write_5m_tokens, sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(output_tokens) AS output_tokens, sum(reasoning_tokens) AS reasoning_tokens,
    sum(output_image_tokens) AS output_image_tokens, sum(cost_usd) AS cost_usd"""
_SUMMED_FIGURES: Final = """
    sum(calls)::bigint AS calls, sum(error_calls)::bigint AS error_calls,
    sum(cancelled_calls)::bigint AS cancelled_calls, sum(unpriced_calls)::bigint AS unpriced_calls,
    sum(input_tokens)::bigint AS input_tokens, sum(cache_read_tokens)::bigint AS cache_read_tokens,
    sum(cache_write_5m_tokens)::bigint AS cache_write_5m_tokens,
    sum(cache_write_1h_tokens)::bigint AS cache_write_1h_tokens,
    sum(output_tokens)::bigint AS output_tokens, sum(reasoning_tokens)::bigint AS reasoning_tokens,
    sum(output_image_tokens)::bigint AS output_image_tokens, sum(cost_usd) AS cost_usd"""

_ROW_COLUMNS: Final = """
    id, call_id, created_at, user_id, conversation_id, message_id, procedure, provider, requested_model, model,
    status, error_type, latency_ms, input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
    output_tokens, reasoning_tokens, prompt_tokens, completion_tokens, total_tokens, usage_estimated, pricing_status,
    estimated_cost_usd, cost_input, cost_cache_read, cost_cache_write_5m, cost_cache_write_1h, cost_output,
    rate_input, rate_cache_read, rate_cache_write_5m, rate_cache_write_1h, rate_output, price_source, price_tier,
    output_image_tokens, rate_output_image, coalesce(cost_output_image, 0) AS cost_output_image"""

_CONVERSATION: Final = f"""
SELECT {CONVERSATION_COLUMNS}, c.model_distribution::text AS model_distribution
FROM conversations c
WHERE c.id = $1
"""
_MOST_EXPENSIVE: Final = "unpriced_calls = calls, cost_usd DESC, calls DESC"
"""The order of "most expensive first" over aggregate rows: groups whose calls are all unpriced (null cost) last.
An ORDER BY expression reads the input columns, not the output's: sort a subquery's rows."""

_CONVERSATION_BY_PROCEDURE: Final = f"""
SELECT *
FROM (SELECT procedure, {_FIGURES} FROM ai_usage_logs WHERE conversation_id = $1 GROUP BY procedure) AS usage
ORDER BY {_MOST_EXPENSIVE}, procedure
"""
_CONVERSATION_ROWS: Final = f"""
SELECT {_ROW_COLUMNS}
FROM ai_usage_logs
WHERE conversation_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2
"""
_CONVERSATION_ROWS_AFTER: Final = f"""
SELECT {_ROW_COLUMNS}
FROM ai_usage_logs
WHERE conversation_id = $1 AND (created_at, id) < ($3, $4)
ORDER BY created_at DESC, id DESC
LIMIT $2
"""

_TOP_ALL_TIME: Final = f"""
SELECT {CONVERSATION_COLUMNS}, u.name AS owner_name
FROM conversations c
JOIN users u ON u.id = c.owner
ORDER BY c.total_cost_usd DESC, c.id
LIMIT $1
"""
_TOP_IN_WINDOW: Final = """
WITH ranked AS (
    SELECT conversation_id,
           count(*) AS llm_calls,
           count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_calls,
           coalesce(sum(input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens), 0)::bigint
               AS total_prompt_tokens,
           coalesce(sum(output_tokens + output_image_tokens), 0)::bigint AS total_completion_tokens,
           coalesce(sum(estimated_cost_usd), 0) AS total_cost_usd
    FROM ai_usage_logs
    WHERE conversation_id IS NOT NULL {window}
    GROUP BY conversation_id
    ORDER BY total_cost_usd DESC, conversation_id
    LIMIT $1
)
SELECT c.id, c.owner, c.title, c.created_at, c.updated_at, u.name AS owner_name, r.llm_calls, r.unpriced_calls,
       r.total_prompt_tokens, r.total_completion_tokens, r.total_prompt_tokens + r.total_completion_tokens
           AS total_tokens_used, r.total_cost_usd
FROM ranked r
JOIN conversations c ON c.id = r.conversation_id
JOIN users u ON u.id = c.owner
ORDER BY r.total_cost_usd DESC, c.id
"""

_UNPRICED_BY_MODEL: Final = f"""
SELECT model, provider, count(*) AS calls, {_TOKEN_SUMS}, min(created_at) AS first_at, max(created_at) AS last_at
FROM ai_usage_logs
WHERE pricing_status = 'unpriced' {{window}}
GROUP BY model, provider
ORDER BY calls DESC, model
"""
_UNPRICED_ROWS: Final = f"""
SELECT {_ROW_COLUMNS}
FROM ai_usage_logs
WHERE pricing_status = 'unpriced' {{window}}
ORDER BY created_at DESC, id DESC
LIMIT $1
"""

_FAILED: Final = "status IN ('error', 'cancelled')"
"""The predicate of the partial index ``ai_usage_logs_failed_created``: spelt the same, so the planner uses it."""
_FAILED_BY_TYPE: Final = f"""
SELECT status, error_type, count(*) AS calls, max(created_at) AS last_at
FROM ai_usage_logs
WHERE {_FAILED} {{filters}}
GROUP BY status, error_type
ORDER BY calls DESC, status, error_type NULLS FIRST
"""
_FAILED_ROWS: Final = f"""
SELECT {_ROW_COLUMNS}
FROM ai_usage_logs
WHERE {_FAILED} {{filters}}
ORDER BY created_at DESC, id DESC
LIMIT $1
"""

_BY_USER: Final = f"""
SELECT s.*, u.name
FROM (SELECT user_id, {_FIGURES} FROM ai_usage_logs {{where}} GROUP BY user_id) AS s
LEFT JOIN users u ON u.id = s.user_id
ORDER BY s.unpriced_calls = s.calls, s.cost_usd DESC, s.calls DESC, s.user_id NULLS LAST
LIMIT $1
"""


def _tokens(row: asyncpg.Record) -> TokenCounts:
    prompt = (
        row["input_tokens"] + row["cache_read_tokens"] + row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"]
    )
    return TokenCounts(
        input=row["input_tokens"],
        cache_read=row["cache_read_tokens"],
        cache_write_5m=row["cache_write_5m_tokens"],
        cache_write_1h=row["cache_write_1h_tokens"],
        output=row["output_tokens"],
        output_image=row["output_image_tokens"],
        reasoning=row["reasoning_tokens"],
        prompt=prompt,
        total=prompt + row["output_tokens"] + row["output_image_tokens"],
    )


class _Figures(TypedDict):
    """The ``UsageFigures`` fields, to build any of its subclasses; typed so that mypy checks ``**`` unpacking."""

    llm_calls: int
    error_calls: int
    cancelled_calls: int
    unpriced_calls: int
    tokens: TokenCounts
    cost_usd: Money | None


def _figures(row: asyncpg.Record) -> _Figures:
    """The figures of an aggregate row (``calls`` is the SQL alias of ``llmCalls``; ``cost_usd`` sums the priced
    calls, and is null on the wire when there are none)."""
    return {
        "llm_calls": row["calls"],
        "error_calls": row["error_calls"],
        "cancelled_calls": row["cancelled_calls"],
        "unpriced_calls": row["unpriced_calls"],
        "tokens": _tokens(row),
        "cost_usd": group_cost(row["cost_usd"], row["calls"], row["unpriced_calls"]),
    }


_ZERO_TOKENS: Final = TokenCounts(
    input=0, cache_read=0, cache_write_5m=0, cache_write_1h=0, output=0, output_image=0, reasoning=0, prompt=0, total=0
)
_NO_FIGURES: Final[_Figures] = {
    "llm_calls": 0,
    "error_calls": 0,
    "cancelled_calls": 0,
    "unpriced_calls": 0,
    "tokens": _ZERO_TOKENS,
    "cost_usd": Money(0),
}


def _sum_figures(parts: Sequence[UsageFigures]) -> UsageFigures:
    def total(field: str) -> int:
        return sum(getattr(p.tokens, field) for p in parts)

    llm_calls, unpriced_calls = sum(p.llm_calls for p in parts), sum(p.unpriced_calls for p in parts)
    return UsageFigures(
        llm_calls=llm_calls,
        error_calls=sum(p.error_calls for p in parts),
        cancelled_calls=sum(p.cancelled_calls for p in parts),
        unpriced_calls=unpriced_calls,
        tokens=TokenCounts(**{field: total(field) for field in TokenCounts.__struct_fields__}),
        cost_usd=group_cost(
            Money(sum((p.cost_usd for p in parts if p.cost_usd is not None), Decimal(0))), llm_calls, unpriced_calls
        ),
    )


def _usage_row(row: asyncpg.Record) -> UsageRow:
    priced = row["pricing_status"] == "priced"
    costs = (
        BucketCosts(
            input=row["cost_input"],
            cache_read=row["cost_cache_read"],
            cache_write_5m=row["cost_cache_write_5m"],
            cache_write_1h=row["cost_cache_write_1h"],
            output=row["cost_output"],
            output_image=row["cost_output_image"],
        )
        if priced and row["cost_input"] is not None
        else None
    )
    rates = (
        BucketRates(
            input=row["rate_input"],
            cache_read=row["rate_cache_read"],
            cache_write_5m=row["rate_cache_write_5m"],
            cache_write_1h=row["rate_cache_write_1h"],
            output=row["rate_output"],
            output_image=row["rate_output_image"],
        )
        if priced and row["rate_input"] is not None
        else None
    )
    tokens = _tokens(row)
    usage = Usage(
        **msgspec.structs.asdict(tokens),
        reported=ReportedTokens(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["total_tokens"],
        ),
        estimated=row["usage_estimated"],
    )
    return UsageRow(
        call_id=row["call_id"],
        created_at=row["created_at"],
        user_id=row["user_id"],
        conversation_id=row["conversation_id"],
        message_id=row["message_id"],
        procedure=row["procedure"],
        provider=row["provider"],
        requested_model=row["requested_model"],
        model=row["model"],
        status=row["status"],
        error_type=row["error_type"],
        latency_ms=row["latency_ms"],
        usage=usage,
        pricing_status=row["pricing_status"],
        cost_usd=row["estimated_cost_usd"],
        costs_usd=costs,
        rates_usd_per_million_tokens=rates,
        price_source=row["price_source"],
        price_tier=row["price_tier"],
    )


def _next_cursor(rows: Sequence[asyncpg.Record], limit: int) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(Position(at=last["created_at"], id=last["id"]))


class _Params:
    """Positional parameters of a statement being assembled: ``params(value)`` returns its placeholder."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _window(column: str, start: datetime | None, end: datetime | None, params: _Params) -> list[str]:
    conditions = []
    if start is not None:
        conditions.append(f"{column} >= {params(start)}")
    if end is not None:
        conditions.append(f"{column} < {params(end)}")
    return conditions


def _page_conditions(
    start: datetime | None, end: datetime | None, cursor: str | None, params: _Params, conditions: Sequence[str] = ()
) -> list[str]:
    """``conditions``, the window, and the position after ``cursor`` in a list ordered by ``(created_at, id)``
    descending."""
    page = [*conditions, *_window("created_at", start, end, params)]
    if cursor is not None:
        after = decode_cursor(cursor)
        page.append(f"(created_at, id) < ({params(after.at)}, {params(after.id)})")
    return page


def _floor_period(moment: datetime) -> datetime:
    return moment - (moment - _PERIOD_ORIGIN) % ROLLUP_PERIOD


def _ceil_period(moment: datetime) -> datetime:
    floor = _floor_period(moment)
    return floor if floor == moment else floor + ROLLUP_PERIOD


@dataclass(frozen=True, slots=True)
class _Split:
    """A window cut into whole rollup periods (``rollup``, None when there are none) and the edges read from rows."""

    rollup: tuple[datetime | None, datetime | None] | None
    raw: tuple[tuple[datetime, datetime], ...]


def _split(start: datetime | None, end: datetime | None) -> _Split:
    inner_start = None if start is None else _ceil_period(start)
    inner_end = None if end is None else _floor_period(end)
    edges: tuple[tuple[datetime, datetime], ...]
    if start is not None and end is not None and inner_start is not None and inner_end is not None:
        if inner_start >= inner_end:
            return _Split(rollup=None, raw=((start, end),))
        edges = ((start, inner_start), (inner_end, end))
    elif start is not None and inner_start is not None:
        edges = ((start, inner_start),)
    elif end is not None and inner_end is not None:
        edges = ((inner_end, end),)
    else:
        edges = ()
    return _Split(rollup=(inner_start, inner_end), raw=tuple((low, high) for low, high in edges if low < high))


def _usage_sums(
    split: _Split,
    params: _Params,
    *,
    keys: Callable[[str], str],
    key_names: Sequence[str],
    conditions: Sequence[str] = (),
) -> str:
    """A statement of ``key_names`` and the figures summed per key over ``split``.

    ``keys(time_column)`` is the select list of the keys for a table whose time column is ``time_column``;
    ``conditions`` must hold for columns both tables share (model, provider, procedure).
    """
    group = ", ".join(str(n) for n in range(1, len(key_names) + 1))
    branches = []
    if split.rollup is not None:
        where = [*conditions, *_window("period_start", *split.rollup, params)]
        branches.append(
            f"SELECT {keys('period_start')}, {_ROLLUP_FIGURES} FROM ai_usage_rollup {_where(where)} GROUP BY {group}"
        )
    for low, high in split.raw:
        where = [*conditions, *_window("created_at", low, high, params)]
        branches.append(f"SELECT {keys('created_at')}, {_FIGURES} FROM ai_usage_logs {_where(where)} GROUP BY {group}")
    names = ", ".join(key_names)
    return f"SELECT {names}, {_SUMMED_FIGURES} FROM ({' UNION ALL '.join(branches)}) AS parts GROUP BY {names}"


def _and(conditions: Sequence[str]) -> str:
    return "".join(f" AND {c}" for c in conditions)


def _fixed_offsets(time_zone: str, *moments: datetime) -> bool:
    """Whether ``time_zone`` is a whole number of rollup periods off UTC at ``moments``: then no rollup period
    straddles one of its local days, weeks or months."""
    zone = ZoneInfo(time_zone)
    for moment in moments:
        offset = moment.astimezone(zone).utcoffset()
        if offset is None or offset % ROLLUP_PERIOD:
            return False
    return True


async def get_usage_by_conversation(db: Database, data: ConversationCostInput) -> ConversationCost:
    """What a conversation cost, and why: its stored totals, the split by model and procedure, and its rows.

    Everything is read in one snapshot, so the split always adds up to the totals shown. Raises
    ``ConversationNotFoundError`` for an unknown id.
    """
    async with db.snapshot() as connection:
        conversation = await connection.fetchrow(_CONVERSATION, data.conversation_id)
        if conversation is None:
            raise ConversationNotFoundError(data.conversation_id)
        by_procedure = await connection.fetch(_CONVERSATION_BY_PROCEDURE, data.conversation_id)
        if data.cursor is None:
            rows = await connection.fetch(_CONVERSATION_ROWS, data.conversation_id, data.limit + 1)
        else:
            after = decode_cursor(data.cursor)
            rows = await connection.fetch(
                _CONVERSATION_ROWS_AFTER, data.conversation_id, data.limit + 1, after.at, after.id
            )
    return ConversationCost(
        conversation_id=conversation["id"],
        owner_id=conversation["owner"],
        title=conversation["title"],
        created_at=conversation["created_at"],
        last_activity_at=conversation["updated_at"],
        totals=totals_from_row(conversation),
        model_distribution=model_shares(conversation["model_distribution"]),
        by_procedure=[ProcedureUsage(procedure=row["procedure"], **_figures(row)) for row in by_procedure],
        rows=[_usage_row(row) for row in rows[: data.limit]],
        next_cursor=_next_cursor(rows, data.limit),
    )


def _bucket_key(
    params: _Params, *, start: datetime, granularity: Granularity, time_zone: str
) -> tuple[Callable[[str], str], str]:
    """The select-list expression of a row's bucket (``bucket_key``, for a table whose time column is given), and
    the placeholder it is relative to: the first hour's start for ``hour`` (absolute hours), else the zone (local
    wall-clock days, weeks and months)."""
    if granularity == "hour":
        origin = params(bucket_start(start, "hour", time_zone))

        def hour(column: str) -> str:
            return f"date_bin('1 hour', {column}, {origin}::timestamptz) AS bucket_key"

        return hour, origin
    zone = params(time_zone)

    def local(column: str) -> str:
        return f"date_trunc('{granularity}', {column} AT TIME ZONE {zone}::text) AS bucket_key"

    return local, zone


def _bucket_start(granularity: Granularity, placeholder: str, column: str = "bucket_key") -> str:
    """``column`` (a ``bucket_key``) as a time (see ``_bucket_key``)."""
    return column if granularity == "hour" else f"{column} AT TIME ZONE {placeholder}::text"


def _date_buckets(
    params: _Params,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    time_zone: str,
    split: _Split,
    conditions: Sequence[str] = (),
) -> str:
    """A statement of every bucket of ``[start, end)`` (``bucket_start``, oldest first) with its figures, NULL for
    an empty bucket.

    Days, weeks and months are computed on local wall-clock time and joined on it, so a day is the zone's calendar
    day across DST changes. Hours are absolute hours aligned on the zone's hour at ``start``: a repeated local hour
    is two buckets and a skipped one none (joining on local wall-clock hours would merge the first and invent the
    second).
    """
    low, high = params(start), params(end)
    keys, placeholder = _bucket_key(params, start=start, granularity=granularity, time_zone=time_zone)
    usage = _usage_sums(split, params, keys=keys, key_names=("bucket_key",), conditions=conditions)
    if granularity == "hour":
        series = f"""
            SELECT bucket_key
            FROM generate_series(
                date_bin('1 hour', {low}::timestamptz, {placeholder}::timestamptz), {high}::timestamptz,
                interval '1 hour'
            ) AS bucket_key
            WHERE bucket_key < {high}::timestamptz"""
    else:
        series = f"""
            SELECT bucket_key
            FROM generate_series(
                date_trunc('{granularity}', {low}::timestamptz AT TIME ZONE {placeholder}::text),
                {high}::timestamptz AT TIME ZONE {placeholder}::text,
                interval '1 {granularity}'
            ) AS bucket_key
            WHERE bucket_key < {high}::timestamptz AT TIME ZONE {placeholder}::text"""
    return f"""
        WITH usage AS ({usage}), buckets AS ({series})
        SELECT {_bucket_start(granularity, placeholder, "buckets.bucket_key")} AS bucket_start, usage.*
        FROM buckets LEFT JOIN usage USING (bucket_key)
        ORDER BY buckets.bucket_key"""


def _buckets(rows: Sequence[asyncpg.Record], time_zone: str) -> list[DateBucket]:
    local = ZoneInfo(time_zone)
    return [
        DateBucket(
            start=row["bucket_start"].astimezone(local),
            **(_figures(row) if row["calls"] is not None else _NO_FIGURES),
        )
        for row in rows
    ]


async def get_usage_by_date_range(db: Database, data: UsageByDateRangeInput) -> UsageByDateRange:
    """Calls, tokens and cost per calendar bucket of ``[start, end)`` in ``data.time_zone``, empty buckets included.

    Whole rollup periods are read from the rollup when the zone is a whole number of periods off UTC at both ends
    (no period then straddles a bucket), else every row of the window.
    """
    start, end = data.bounds()
    if _fixed_offsets(data.time_zone, start, end):
        split = _split(start, end)
    else:
        split = _Split(rollup=None, raw=((start, end),))
    params = _Params()
    statement = _date_buckets(
        params, start=start, end=end, granularity=data.granularity, time_zone=data.time_zone, split=split
    )
    buckets = _buckets(await db.fetch(statement, *params.values), data.time_zone)
    return UsageByDateRange(
        start=start,
        end=end,
        granularity=data.granularity,
        time_zone=data.time_zone,
        buckets=buckets,
        overall=_sum_figures(buckets),
    )


@dataclass(frozen=True, slots=True)
class BucketShare:
    """One group's part (a model's, a procedure's) of one ``admin.usageByDateRange`` bucket."""

    start: datetime
    key: str
    figures: UsageFigures


GROUPS: Final = {"model": "model", "procedure": "procedure"}
"""What ``get_usage_by_date_range_and_group`` may split buckets by: a name and its column."""


async def get_usage_by_date_range_and_group(db: Database, data: UsageByDateRangeInput, by: str) -> list[BucketShare]:
    """The buckets of ``get_usage_by_date_range`` split by model or procedure (``by``, a key of ``GROUPS``): only
    the non-empty (bucket, group) pairs, oldest bucket first; each bucket's parts add up to its figures, since the
    same rows are read the same way (the console's stacked daily chart)."""
    column = GROUPS[by]
    start, end = data.bounds()
    if _fixed_offsets(data.time_zone, start, end):
        split = _split(start, end)
    else:
        split = _Split(rollup=None, raw=((start, end),))
    params = _Params()
    keys, placeholder = _bucket_key(params, start=start, granularity=data.granularity, time_zone=data.time_zone)
    usage = _usage_sums(
        split,
        params,
        keys=lambda time_column: f"{keys(time_column)}, {column}",
        key_names=("bucket_key", column),
    )
    statement = f"""
        SELECT {_bucket_start(data.granularity, placeholder)} AS bucket_start, usage.*
        FROM ({usage}) AS usage
        ORDER BY bucket_key, {column}"""
    local = ZoneInfo(data.time_zone)
    return [
        BucketShare(start=row["bucket_start"].astimezone(local), key=row[column], figures=UsageFigures(**_figures(row)))
        for row in await db.fetch(statement, *params.values)
    ]


async def get_my_usage(db: Database, user_id: uuid.UUID, data: MyUsageInput, *, now: datetime | None = None) -> MyUsage:
    """A user's own calls (``ai_usage_logs.user_id``, so calls outside any conversation count too) per calendar
    bucket and per model, read in one snapshot so that both add up to ``overall``.

    Raises ``InvalidInput`` when the window, defaults filled in, is empty or longer than the granularity allows.
    """
    start, end = data.bounds(datetime.now(UTC) if now is None else now)
    whole = _Split(rollup=None, raw=((start, end),))
    by_bucket = _Params()
    buckets_statement = _date_buckets(
        by_bucket,
        start=start,
        end=end,
        granularity=data.granularity,
        time_zone=data.time_zone,
        split=whole,
        conditions=[f"user_id = {by_bucket(user_id)}"],
    )
    by_model = _Params()
    models_statement = _usage_sums(
        whole,
        by_model,
        keys=lambda _: "model, provider",
        key_names=("model", "provider"),
        conditions=[f"user_id = {by_model(user_id)}"],
    )
    async with db.snapshot() as connection:
        bucket_rows = await connection.fetch(buckets_statement, *by_bucket.values)
        model_rows = await connection.fetch(
            f"SELECT * FROM ({models_statement}) AS usage ORDER BY {_MOST_EXPENSIVE}, model", *by_model.values
        )
    buckets = _buckets(bucket_rows, data.time_zone)
    return MyUsage(
        start=start,
        end=end,
        granularity=data.granularity,
        time_zone=data.time_zone,
        buckets=buckets,
        models=[ModelUsage(model=row["model"], provider=row["provider"], **_figures(row)) for row in model_rows],
        overall=_sum_figures(buckets),
    )


async def get_usage_by_model(db: Database, data: UsageByModelInput) -> UsageByModel:
    """Per reported model, most expensive first; models whose calls were all unpriced come last, by calls."""
    start, end = data.window()
    params = _Params()
    conditions = [f"model = {params(data.model)}"] if data.model is not None else []
    statement = _usage_sums(
        _split(start, end),
        params,
        keys=lambda _: "model, provider",
        key_names=("model", "provider"),
        conditions=conditions,
    )
    rows = await db.fetch(f"SELECT * FROM ({statement}) AS usage ORDER BY {_MOST_EXPENSIVE}, model", *params.values)
    return UsageByModel(
        start=start,
        end=end,
        models=[ModelUsage(model=row["model"], provider=row["provider"], **_figures(row)) for row in rows],
    )


async def get_usage_by_procedure(db: Database, data: UsageByProcedureInput) -> UsageByProcedure:
    """Per procedure, most expensive first."""
    start, end = data.window()
    params = _Params()
    conditions = [f"procedure = {params(data.procedure)}"] if data.procedure is not None else []
    statement = _usage_sums(
        _split(start, end),
        params,
        keys=lambda _: "procedure",
        key_names=("procedure",),
        conditions=conditions,
    )
    rows = await db.fetch(f"SELECT * FROM ({statement}) AS usage ORDER BY {_MOST_EXPENSIVE}, procedure", *params.values)
    return UsageByProcedure(
        start=start,
        end=end,
        procedures=[ProcedureUsage(procedure=row["procedure"], **_figures(row)) for row in rows],
    )


async def get_usage_by_user(db: Database, data: UsageByUserInput) -> UsageByUser:
    """Per user (by ``ai_usage_logs.user_id``: calls outside conversations count too), most expensive first; ties
    are broken by user id, so the order is stable between calls."""
    start, end = data.window()
    params = _Params()
    params(data.limit)
    conditions = _window("created_at", start, end, params)
    if data.user_id is not None:
        conditions.insert(0, f"user_id = {params(data.user_id)}")
    rows = await db.fetch(_BY_USER.format(where=_where(conditions)), *params.values)
    return UsageByUser(
        start=start,
        end=end,
        users=[UserUsage(user_id=row["user_id"], name=row["name"], **_figures(row)) for row in rows],
    )


async def get_top_conversations_by_cost(db: Database, data: TopConversationsInput) -> TopConversations:
    """The most expensive conversations: by stored totals without a window, by the calls inside it with one.

    Ties are broken by id, so the order is stable between calls.
    """
    start, end = data.window()
    if start is None and end is None:
        rows = await db.fetch(_TOP_ALL_TIME, data.limit)
    else:
        params = _Params()
        params(data.limit)
        window = _and(_window("created_at", start, end, params))
        rows = await db.fetch(_TOP_IN_WINDOW.format(window=window), *params.values)
    return TopConversations(
        start=start,
        end=end,
        conversations=[
            TopConversation(
                conversation_id=row["id"],
                title=row["title"],
                owner_id=row["owner"],
                owner_name=row["owner_name"],
                created_at=row["created_at"],
                last_activity_at=row["updated_at"],
                totals=totals_from_row(row),
            )
            for row in rows
        ],
    )


async def get_unpriced_calls(db: Database, data: UnpricedCallsInput) -> UnpricedCalls:
    """Calls that wait for a price: per model (with the period they span) and the rows, newest first."""
    start, end = data.window()
    summary = _Params()
    summary_window = _and(_window("created_at", start, end, summary))
    page = _Params()
    page(data.limit + 1)
    page_window = _and(_page_conditions(start, end, data.cursor, page))
    async with db.snapshot() as connection:
        models = await connection.fetch(_UNPRICED_BY_MODEL.format(window=summary_window), *summary.values)
        rows = await connection.fetch(_UNPRICED_ROWS.format(window=page_window), *page.values)
    return UnpricedCalls(
        start=start,
        end=end,
        unpriced_calls=sum(row["calls"] for row in models),
        models=[
            UnpricedModel(
                model=row["model"],
                provider=row["provider"],
                llm_calls=row["calls"],
                tokens=_tokens(row),
                first_at=row["first_at"],
                last_at=row["last_at"],
            )
            for row in models
        ],
        rows=[_usage_row(row) for row in rows[: data.limit]],
        next_cursor=_next_cursor(rows, data.limit),
    )


async def get_failed_calls(db: Database, data: FailedCallsInput) -> FailedCalls:
    """Calls that failed or were cancelled: counted by status and error type over the window, and the rows newest
    first (paged), both narrowed by ``procedure`` and ``model`` when given."""
    start, end = data.window()

    def narrowing(params: _Params) -> list[str]:
        conditions = []
        if data.procedure is not None:
            conditions.append(f"procedure = {params(data.procedure)}")
        if data.model is not None:
            conditions.append(f"model = {params(data.model)}")
        return conditions

    summary = _Params()
    summary_filters = _and([*narrowing(summary), *_window("created_at", start, end, summary)])
    page = _Params()
    page(data.limit + 1)
    page_filters = _and(_page_conditions(start, end, data.cursor, page, narrowing(page)))
    async with db.snapshot() as connection:
        by_type = await connection.fetch(_FAILED_BY_TYPE.format(filters=summary_filters), *summary.values)
        rows = await connection.fetch(_FAILED_ROWS.format(filters=page_filters), *page.values)
    return FailedCalls(
        start=start,
        end=end,
        error_calls=sum(row["calls"] for row in by_type if row["status"] == "error"),
        cancelled_calls=sum(row["calls"] for row in by_type if row["status"] == "cancelled"),
        error_types=[
            ErrorTypeCount(
                status=row["status"], error_type=row["error_type"], llm_calls=row["calls"], last_at=row["last_at"]
            )
            for row in by_type
        ],
        rows=[_usage_row(row) for row in rows[: data.limit]],
        next_cursor=_next_cursor(rows, data.limit),
    )


# --- admin.cacheStats ---------------------------------------------------------------------------------------------

CACHE_LOOKUP: Final = "(status = 'cache_hit' OR metadata ? 'cache')"
"""The usage rows of cache lookups: hits, and the model calls of misses and refreshes (``metadata.cache``, set by
``LLMCore``). Spelled as the predicate of the partial index ``ai_usage_logs_cache_lookups``, which it must match."""
_CACHE_LOOKUPS: Final = f"""
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, procedure,
       count(*) FILTER (WHERE status = 'cache_hit') AS hits,
       count(*) FILTER (WHERE status <> 'cache_hit' AND metadata ->> 'cache' = 'miss') AS misses,
       count(*) FILTER (WHERE status = 'cache_hit' AND saved_usd IS NULL) AS unpriced_hits,
       coalesce(sum(saved_usd) FILTER (WHERE status = 'cache_hit'), 0) AS saved_usd
FROM ai_usage_logs
WHERE {CACHE_LOOKUP}{{filters}}
GROUP BY 1, 2
"""
_REPLAYS: Final = "SELECT day, procedure, replays, deduplicated FROM idempotent_replay_counts {where}"
_LIVE_ENTRIES: Final = "SELECT count(*) FROM response_cache WHERE expires_at > now(){filters}"


@dataclass
class _CacheTally:
    hits: int = 0
    misses: int = 0
    unpriced_hits: int = 0
    saved_usd: Decimal = Decimal(0)
    replays: int = 0
    deduplicated: int = 0

    def add(self, row: Any) -> None:
        self.hits += row["hits"]
        self.misses += row["misses"]
        self.unpriced_hits += row["unpriced_hits"]
        self.saved_usd += row["saved_usd"]

    def figures(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / lookups if lookups else None,
            "saved_usd": group_cost(Money(self.saved_usd), self.hits, self.unpriced_hits),
            "idempotent_replays": self.replays,
            "deduplicated_requests": self.deduplicated,
        }


async def get_cache_stats(db: Database, data: CacheStatsInput) -> CacheStats:
    """Response-cache entries live now; hits, misses, hit ratio and savings over the window (from the usage rows of
    lookups, through their partial index); idempotent replays and de-duplicated requests per whole UTC day that meets
    the window. One snapshot."""
    start, end = data.window()
    lookups = _Params()
    lookup_filters = _window("created_at", start, end, lookups)
    replays = _Params()
    replay_filters = []
    if start is not None:
        replay_filters.append(f"day >= {replays(start.astimezone(UTC).date())}")
    if end is not None:
        replay_filters.append(f"day <= {replays((end - timedelta(microseconds=1)).astimezone(UTC).date())}")
    entries = _Params()
    entry_filters = []
    if data.procedure is not None:
        lookup_filters.append(f"procedure = {lookups(data.procedure)}")
        replay_filters.append(f"procedure = {replays(data.procedure)}")
        entry_filters.append(f"procedure = {entries(data.procedure)}")
    async with db.snapshot() as connection:
        live = await connection.fetchval(_LIVE_ENTRIES.format(filters=_and(entry_filters)), *entries.values)
        lookup_rows = await connection.fetch(_CACHE_LOOKUPS.format(filters=_and(lookup_filters)), *lookups.values)
        replay_rows = await connection.fetch(_REPLAYS.format(where=_where(replay_filters)), *replays.values)
    overall = _CacheTally()
    by_procedure: dict[str, _CacheTally] = {}
    by_day: dict[Any, _CacheTally] = {}
    for row in lookup_rows:
        for tally in (overall, by_procedure.setdefault(row["procedure"], _CacheTally())):
            tally.add(row)
        by_day.setdefault(row["day"], _CacheTally()).add(row)
    for row in replay_rows:
        for tally in (
            overall,
            by_procedure.setdefault(row["procedure"], _CacheTally()),
            by_day.setdefault(row["day"], _CacheTally()),
        ):
            tally.replays += row["replays"]
            tally.deduplicated += row["deduplicated"]
    return CacheStats(
        start=start,
        end=end,
        entries=live,
        combined=CacheFigures(**overall.figures()),
        by_procedure=[
            ProcedureCacheStats(procedure=procedure, **tally.figures())
            for procedure, tally in sorted(
                by_procedure.items(), key=lambda item: (-item[1].hits, -item[1].misses, item[0])
            )
        ],
        by_day=[DailyCacheStats(day=day, **tally.figures()) for day, tally in sorted(by_day.items())],
    )
