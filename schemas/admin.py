"""Wire types of the usage reports: the admin procedures (what a conversation cost and why, where the money goes,
who spends it, which calls failed) and ``chat.getMyUsage`` (a user's own spend).

Conventions shared by every figure here:

- a time window is ``[start, end)``; ``start`` and ``end`` carry an offset (a naive time is rejected). The reports
  cut into calendar buckets in a ``timeZone`` (``admin.usageByDateRange``, ``chat.getMyUsage``) also take a date
  alone, meaning its midnight in that zone (``DateOrTime``);
- ``costUsd`` is the exact sum over *priced* calls. A call whose model has no known price is never counted as free:
  it adds to ``llmCalls``, ``unpricedCalls`` and the tokens, and nothing to ``costUsd``; a group whose calls are all
  unpriced has a null ``costUsd`` (unknown, not zero). Lists "most expensive first" put such groups last;
- ``llmCalls`` counts every recorded call, failed and cancelled ones included (a failed call may still have cost).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.money import Money
from schemas.registry import Access, query
from schemas.usage import (
    UNKNOWN_COST,
    CallStatus,
    ConversationTotals,
    ModelName,
    ModelShare,
    PricingStatus,
    Provider,
    TokenCounts,
    Usage,
)
from schemas.validation import (
    Cursor,
    DateOrTime,
    InvalidInput,
    TimeZoneName,
    check_time,
    check_time_zone,
    check_window,
    decode_cursor,
    local_midnight,
    resolve_date_or_time,
)

__all__ = (
    "ADMIN_PROCEDURES",
    "CACHE_STATS",
    "DEFAULT_BUCKETS",
    "GET_MY_USAGE",
    "LONGEST_RANGE",
    "BucketCosts",
    "BucketRates",
    "CacheFigures",
    "CacheStats",
    "CacheStatsInput",
    "ConversationCost",
    "ConversationCostInput",
    "DailyCacheStats",
    "DateBucket",
    "ErrorTypeCount",
    "FailedCalls",
    "FailedCallsInput",
    "Granularity",
    "InvalidInput",
    "ModelUsage",
    "MyUsage",
    "MyUsageInput",
    "ProcedureCacheStats",
    "ProcedureUsage",
    "TopConversation",
    "TopConversations",
    "TopConversationsInput",
    "UnpricedCalls",
    "UnpricedCallsInput",
    "UnpricedModel",
    "UsageByDateRange",
    "UsageByDateRangeInput",
    "UsageByModel",
    "UsageByModelInput",
    "UsageByProcedure",
    "UsageByProcedureInput",
    "UsageByUser",
    "UsageByUserInput",
    "UsageFigures",
    "UsageRow",
    "UserUsage",
    "bucket_start",
)

Granularity = Literal["hour", "day", "week", "month"]
"""Calendar buckets in the requested time zone; weeks start on Monday (ISO 8601). An hour is an hour of the zone's
clock: when clocks go back, the repeated hour is two buckets (two offsets); a skipped hour has no bucket."""
ProcedureName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=500)]

LONGEST_RANGE: Final[dict[Granularity, timedelta]] = {
    "hour": timedelta(days=45),
    "day": timedelta(days=1_100),
    "week": timedelta(days=3_660),
    "month": timedelta(days=3_660),
}
"""How far apart ``start`` and ``end`` may be, per granularity: bounds the number of buckets (about 1,100 hours or
days, 520 weeks, 120 months)."""
DEFAULT_BUCKETS: Final[dict[Granularity, int]] = {"hour": 24, "day": 30, "week": 12, "month": 12}
"""``chat.getMyUsage`` without ``start``: this many whole buckets, the last one ending at ``end``."""

_GRANULARITY: Final = (
    "Bucket size, in `timeZone`: "
    + ", ".join(f"`{unit}` (windows of at most {LONGEST_RANGE[unit].days:,} days)" for unit in LONGEST_RANGE)
    + ". Weeks start on Monday. An hour follows the zone's clock: when clocks go back the repeated hour is two "
    "buckets, a skipped hour has none."
)
_TIME_ZONE: Final = "IANA time zone (e.g. `Europe/Berlin`) in which hours, days, weeks and months begin; default `UTC`."
_DATE_OR_TIME: Final = (
    "A date alone (`2026-11-01`: its midnight in `timeZone`) or a time with an offset (`2026-11-01T09:30:00Z`); "
    "a time without an offset is refused."
)
_UTC_DATE_OR_TIME: Final = (
    "A date alone (`2026-11-01`: its midnight in UTC) or a time with an offset (`2026-11-01T09:30:00Z`); "
    "a time without an offset is refused."
)


# --- figures ------------------------------------------------------------------------------------------------------


class UsageFigures(WireOutput, frozen=True, kw_only=True):
    """Aggregates over recorded calls: ``llmCalls`` counts them all, failed and cancelled ones included."""

    llm_calls: int
    error_calls: int
    cancelled_calls: int
    unpriced_calls: int
    tokens: TokenCounts
    cost_usd: Annotated[Money | None, msgspec.Meta(description=f"Sum over the priced calls, USD. {UNKNOWN_COST}")]


class BucketRates(WireOutput, frozen=True, kw_only=True):
    """USD per 1,000,000 tokens of each bucket, as the call was priced."""

    input: Money
    cache_read: Money
    cache_write_5m: Money = msgspec.field(name="cacheWrite5m")
    cache_write_1h: Money = msgspec.field(name="cacheWrite1h")
    output: Money
    output_image: Annotated[
        Money | None, msgspec.Meta(description="Generated image tokens; null for a call recorded before image pricing.")
    ]


class BucketCosts(WireOutput, frozen=True, kw_only=True):
    """USD charged for each bucket; they add up to the call's ``costUsd``."""

    input: Money
    cache_read: Money
    cache_write_5m: Money = msgspec.field(name="cacheWrite5m")
    cache_write_1h: Money = msgspec.field(name="cacheWrite1h")
    output: Money
    output_image: Annotated[
        Money, msgspec.Meta(description="Generated image tokens, or the images of a per-image call.")
    ]


class UsageRow(WireOutput, frozen=True, kw_only=True):
    """One recorded model call. ``costUsd``, ``costsUsd`` and ``ratesUsdPerMillionTokens`` are null when the call is
    unpriced; ``ratesUsdPerMillionTokens`` is null too for a call priced per image (``priceSource`` says at which
    quality and size; ``costsUsd.outputImage`` is its cost)."""

    call_id: uuid.UUID
    created_at: datetime
    user_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    procedure: str
    provider: Provider
    requested_model: str
    model: str
    status: CallStatus
    error_type: str | None
    latency_ms: int
    usage: Usage
    pricing_status: PricingStatus
    cost_usd: Money | None
    costs_usd: BucketCosts | None
    rates_usd_per_million_tokens: BucketRates | None
    price_source: str | None
    price_tier: str | None


class _Window(WireInput, frozen=True, kw_only=True):
    """An optional ``[start, end)`` window: without ``start`` it is open to the past, without ``end`` to the future.
    A date alone means its midnight in UTC."""

    start: Annotated[DateOrTime | None, msgspec.Meta(description=_UTC_DATE_OR_TIME)] = None
    end: Annotated[DateOrTime | None, msgspec.Meta(description=_UTC_DATE_OR_TIME)] = None

    def __post_init__(self) -> None:
        check_window(*self.window())

    def window(self) -> tuple[datetime | None, datetime | None]:
        """``start`` and ``end`` as times (a date is its midnight in UTC)."""
        return (
            None if self.start is None else resolve_date_or_time(self.start, "UTC", "start"),
            None if self.end is None else resolve_date_or_time(self.end, "UTC", "end"),
        )


# --- admin.getConversationCost ------------------------------------------------------------------------------------


class ConversationCostInput(WireInput, frozen=True, kw_only=True):
    """``limit`` and ``cursor`` page the usage rows, newest first."""

    conversation_id: uuid.UUID
    limit: PageLimit = 50
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        if self.cursor is not None:
            decode_cursor(self.cursor)


class ProcedureUsage(UsageFigures, frozen=True, kw_only=True):
    procedure: str


class ConversationCost(WireOutput, frozen=True, kw_only=True):
    """A conversation's stored totals and their explanation: the split by model and by procedure, and the rows."""

    conversation_id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    created_at: datetime
    last_activity_at: datetime
    totals: ConversationTotals
    model_distribution: list[ModelShare]
    by_procedure: list[ProcedureUsage]
    rows: list[UsageRow]
    next_cursor: str | None


# --- admin.usageByDateRange ---------------------------------------------------------------------------------------


class UsageByDateRangeInput(WireInput, frozen=True, kw_only=True):
    """``timeZone`` (IANA, e.g. ``Europe/Berlin``, default ``UTC``) decides where an hour, day, week or month begins,
    and which midnight a date alone means."""

    start: Annotated[DateOrTime, msgspec.Meta(description=_DATE_OR_TIME)]
    end: Annotated[DateOrTime, msgspec.Meta(description=_DATE_OR_TIME)]
    granularity: Annotated[Granularity, msgspec.Meta(description=_GRANULARITY)]
    time_zone: Annotated[TimeZoneName, msgspec.Meta(description=_TIME_ZONE)] = "UTC"

    def __post_init__(self) -> None:
        check_time_zone(self.time_zone)
        check_window(*self.bounds(), longest=LONGEST_RANGE[self.granularity])

    def bounds(self) -> tuple[datetime, datetime]:
        """``start`` and ``end`` as times (a date is its midnight in ``timeZone``)."""
        return (
            resolve_date_or_time(self.start, self.time_zone, "start"),
            resolve_date_or_time(self.end, self.time_zone, "end"),
        )


class DateBucket(UsageFigures, frozen=True, kw_only=True):
    """``start`` is the bucket's calendar start, with the requested zone's offset at that time (the first bucket may
    begin before the window's ``start``, but only calls inside the window are counted)."""

    start: datetime


class UsageByDateRange(WireOutput, frozen=True, kw_only=True):
    """Every bucket of the window, empty ones included (with zeros), oldest first; ``overall`` sums them. ``start``
    and ``end`` are the window's bounds as times."""

    start: datetime
    end: datetime
    granularity: Granularity
    time_zone: str
    buckets: list[DateBucket]
    overall: UsageFigures


# --- admin.usageByModel / admin.usageByProcedure ------------------------------------------------------------------


class UsageByModelInput(_Window, frozen=True, kw_only=True):
    """``model`` (as the provider reported it) narrows to one model."""

    model: ModelName | None = None


class ModelUsage(UsageFigures, frozen=True, kw_only=True):
    model: str
    provider: Provider


class UsageByModel(WireOutput, frozen=True, kw_only=True):
    """Per reported model, most expensive first (models whose calls were all unpriced last, by calls)."""

    start: datetime | None
    end: datetime | None
    models: list[ModelUsage]


class UsageByProcedureInput(_Window, frozen=True, kw_only=True):
    procedure: ProcedureName | None = None


class UsageByProcedure(WireOutput, frozen=True, kw_only=True):
    """Per procedure, most expensive first (procedures whose calls were all unpriced last, by calls)."""

    start: datetime | None
    end: datetime | None
    procedures: list[ProcedureUsage]


# --- admin.topConversationsByCost ---------------------------------------------------------------------------------


class TopConversationsInput(_Window, frozen=True, kw_only=True):
    """Without a window the ranking is by all-time totals; with one, by what each conversation cost inside it."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


class TopConversation(WireOutput, frozen=True, kw_only=True):
    """``totals`` are the conversation's all-time totals, or only the calls inside the window when one was given."""

    conversation_id: uuid.UUID
    title: str
    owner_id: uuid.UUID
    owner_name: str
    created_at: datetime
    last_activity_at: datetime
    totals: ConversationTotals


class TopConversations(WireOutput, frozen=True, kw_only=True):
    start: datetime | None
    end: datetime | None
    conversations: list[TopConversation]


# --- admin.unpricedCalls ------------------------------------------------------------------------------------------


class UnpricedCallsInput(_Window, frozen=True, kw_only=True):
    """``limit`` and ``cursor`` page the calls, newest first."""

    limit: PageLimit = 50
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cursor is not None:
            decode_cursor(self.cursor)


class UnpricedModel(WireOutput, frozen=True, kw_only=True):
    """A model that needs a price: how many calls wait for one, and over which period."""

    model: str
    provider: Provider
    llm_calls: int
    tokens: TokenCounts
    first_at: datetime
    last_at: datetime


class UnpricedCalls(WireOutput, frozen=True, kw_only=True):
    """Calls recorded without a cost because their model had no known price (a reprice fills them in)."""

    start: datetime | None
    end: datetime | None
    unpriced_calls: int
    models: list[UnpricedModel]
    rows: list[UsageRow]
    next_cursor: str | None


# --- admin.usageByUser --------------------------------------------------------------------------------------------


class UsageByUserInput(_Window, frozen=True, kw_only=True):
    """``userId`` narrows to one user; ``limit`` bounds the users listed (the most expensive ones)."""

    user_id: uuid.UUID | None = None
    limit: PageLimit = 50


class UserUsage(UsageFigures, frozen=True, kw_only=True):
    """One user's calls, in conversations and outside them. ``userId`` is null for calls recorded without a user;
    ``name`` is null when no user has that id (any more)."""

    user_id: uuid.UUID | None
    name: str | None


class UsageByUser(WireOutput, frozen=True, kw_only=True):
    """Per user who made calls in the window, most expensive first (users whose calls were all unpriced last)."""

    start: datetime | None
    end: datetime | None
    users: list[UserUsage]


# --- admin.failedCalls --------------------------------------------------------------------------------------------


class FailedCallsInput(_Window, frozen=True, kw_only=True):
    """``limit`` and ``cursor`` page the calls, newest first; ``procedure`` and ``model`` (as reported) narrow both
    the rows and the counts."""

    limit: PageLimit = 50
    cursor: Cursor | None = None
    procedure: ProcedureName | None = None
    model: ModelName | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cursor is not None:
            decode_cursor(self.cursor)


class ErrorTypeCount(WireOutput, frozen=True, kw_only=True):
    """How many calls failed (``error``) or were abandoned (``cancelled``) with one ``errorType``, and when last."""

    status: CallStatus
    error_type: str | None
    llm_calls: int
    last_at: datetime


class FailedCalls(WireOutput, frozen=True, kw_only=True):
    """Calls with status ``error`` or ``cancelled``: counted by error type (most frequent first) and listed newest
    first. A failed call may still have cost: its row says so."""

    start: datetime | None
    end: datetime | None
    error_calls: int
    cancelled_calls: int
    error_types: list[ErrorTypeCount]
    rows: list[UsageRow]
    next_cursor: str | None


# --- admin.cacheStats ---------------------------------------------------------------------------------------------


class CacheStatsInput(_Window, frozen=True, kw_only=True):
    """Every field is optional: the window narrows the lookups, savings and replays (not ``entries``, which are
    the entries live now); ``procedure`` narrows everything."""

    procedure: ProcedureName | None = None


class CacheFigures(WireOutput, frozen=True, kw_only=True):
    """Response-cache lookups and idempotent replays over a group.

    ``hits``: calls the cache answered (usage rows with status ``cache_hit``); ``misses``: calls that asked for the
    cache (``mode: "use"``), found no entry and called the model (a refresh is neither); ``hitRatio``:
    ``hits / (hits + misses)``, null without lookups; ``savedUsd``: what the hits would have cost (each at its day's
    rates), null when every hit was of an unpriced model; ``idempotentReplays``: requests answered by replaying an
    idempotency key's stored answer (no usage row, no model call), counted per UTC day; ``deduplicatedRequests``:
    requests without a key answered from an identical one of the same user within the de-duplication window
    (``personas.generate``; no usage row, no model call), counted per UTC day."""

    hits: int
    misses: int
    hit_ratio: float | None
    saved_usd: Money | None
    idempotent_replays: int
    deduplicated_requests: int = 0


class ProcedureCacheStats(CacheFigures, frozen=True, kw_only=True):
    procedure: str


class DailyCacheStats(CacheFigures, frozen=True, kw_only=True):
    day: Annotated[date, msgspec.Meta(description="A UTC day.")]


class CacheStats(WireOutput, frozen=True, kw_only=True):
    """The response cache and idempotency keys at work: ``entries`` live now, and over the window ``combined`` (every
    procedure), per procedure (most hits first) and per UTC day (oldest first; days without lookups or replays are
    left out). Replays are counted per whole UTC day: a window that cuts a day counts that day's replays whole."""

    start: datetime | None
    end: datetime | None
    entries: int
    combined: CacheFigures
    by_procedure: list[ProcedureCacheStats]
    by_day: list[DailyCacheStats]


# --- chat.getMyUsage ----------------------------------------------------------------------------------------------


class MyUsageInput(WireInput, frozen=True, kw_only=True):
    """Every field is optional: without ``end`` the window ends with the current bucket (today, for days); without
    ``start`` it holds whole buckets up to ``end``: 24 hours, 30 days, 12 weeks or 12 months."""

    start: Annotated[DateOrTime | None, msgspec.Meta(description=_DATE_OR_TIME)] = None
    end: Annotated[DateOrTime | None, msgspec.Meta(description=_DATE_OR_TIME)] = None
    granularity: Annotated[Granularity, msgspec.Meta(description=_GRANULARITY)] = "day"
    time_zone: Annotated[TimeZoneName, msgspec.Meta(description=_TIME_ZONE)] = "UTC"

    def __post_init__(self) -> None:
        check_time_zone(self.time_zone)
        start = None if self.start is None else resolve_date_or_time(self.start, self.time_zone, "start")
        end = None if self.end is None else resolve_date_or_time(self.end, self.time_zone, "end")
        if start is not None and end is not None:
            check_window(start, end, longest=LONGEST_RANGE[self.granularity])
        else:
            check_window(start, end)

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """``start`` and ``end`` as times, defaults filled in from ``now``. Raises ``InvalidInput`` when the window
        this makes is empty or too long."""
        if self.end is None:
            end = bucket_start(now, self.granularity, self.time_zone, 1)
        else:
            end = resolve_date_or_time(self.end, self.time_zone, "end")
        check_time(end, "end")
        if self.start is None:
            last = end - timedelta(microseconds=1)
            start = bucket_start(last, self.granularity, self.time_zone, 1 - DEFAULT_BUCKETS[self.granularity])
        else:
            start = resolve_date_or_time(self.start, self.time_zone, "start")
        check_window(start, end, longest=LONGEST_RANGE[self.granularity])
        return start, end


def bucket_start(moment: datetime, granularity: Granularity, time_zone: str, offset: int = 0) -> datetime:
    """The start of the bucket ``offset`` buckets after (before, if negative) the one that holds ``moment``.

    Days, weeks and months are the zone's calendar ones; hours are absolute hours aligned on the zone's clock at
    ``moment``."""
    local = moment.astimezone(ZoneInfo(time_zone))
    if granularity == "hour":
        into_hour = timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
        return moment - into_hour + timedelta(hours=offset)
    day = local.date()
    if granularity == "day":
        first = day + timedelta(days=offset)
    elif granularity == "week":
        first = day - timedelta(days=day.weekday()) + timedelta(weeks=offset)
    else:
        months = day.year * 12 + day.month - 1 + offset
        first = date(months // 12, months % 12 + 1, 1)
    return local_midnight(first, time_zone)


class MyUsage(WireOutput, frozen=True, kw_only=True):
    """The caller's own calls, in conversations and outside them (``chat.executeAction`` and
    ``chat.summarizeEmail`` without a conversation included): every bucket of the window oldest first (empty ones
    at zero), per reported model most expensive first, and ``overall``. ``start`` and ``end`` are the window as
    used, defaults filled in."""

    start: datetime
    end: datetime
    granularity: Granularity
    time_zone: str
    buckets: list[DateBucket]
    models: list[ModelUsage]
    overall: UsageFigures


GET_CONVERSATION_COST = query(
    "admin.getConversationCost",
    ConversationCostInput,
    ConversationCost,
    Access.ADMIN,
    "A conversation's totals, cost by model and by procedure, and its usage rows newest first (paged).",
)
USAGE_BY_DATE_RANGE = query(
    "admin.usageByDateRange",
    UsageByDateRangeInput,
    UsageByDateRange,
    Access.ADMIN,
    "Calls, tokens and cost per hour, day, week or month of a window, in a time zone (default UTC).",
)
USAGE_BY_MODEL = query(
    "admin.usageByModel",
    UsageByModelInput,
    UsageByModel,
    Access.ADMIN,
    "Calls, tokens by bucket and cost per reported model, optionally within a window.",
)
USAGE_BY_PROCEDURE = query(
    "admin.usageByProcedure",
    UsageByProcedureInput,
    UsageByProcedure,
    Access.ADMIN,
    "Calls, tokens by bucket and cost per procedure, optionally within a window.",
)
TOP_CONVERSATIONS_BY_COST = query(
    "admin.topConversationsByCost",
    TopConversationsInput,
    TopConversations,
    Access.ADMIN,
    "The most expensive conversations, all time or within a window, with owner and last activity.",
)
USAGE_BY_USER = query(
    "admin.usageByUser",
    UsageByUserInput,
    UsageByUser,
    Access.ADMIN,
    "Calls, tokens and cost per user, most expensive first, optionally within a window or for one user.",
)
FAILED_CALLS = query(
    "admin.failedCalls",
    FailedCallsInput,
    FailedCalls,
    Access.ADMIN,
    "Calls that failed or were cancelled, counted by error type and listed newest first (paged).",
)
GET_MY_USAGE = query(
    "chat.getMyUsage",
    MyUsageInput,
    MyUsage,
    Access.USER,
    "The caller's own calls, tokens and cost per hour, day, week or month and per model, in and outside conversations.",
)
UNPRICED_CALLS = query(
    "admin.unpricedCalls",
    UnpricedCallsInput,
    UnpricedCalls,
    Access.ADMIN,
    "Calls recorded without a price, by model and newest first, so that prices can be added and rows repriced.",
)

CACHE_STATS = query(
    "admin.cacheStats",
    CacheStatsInput,
    CacheStats,
    Access.ADMIN,
    "Response-cache entries, hits, misses, hit ratio and saved USD, and idempotent replays: overall, per procedure "
    "and per UTC day.",
)

ADMIN_PROCEDURES: Final = (
    GET_CONVERSATION_COST,
    USAGE_BY_DATE_RANGE,
    USAGE_BY_MODEL,
    USAGE_BY_PROCEDURE,
    TOP_CONVERSATIONS_BY_COST,
    UNPRICED_CALLS,
    USAGE_BY_USER,
    FAILED_CALLS,
    CACHE_STATS,
)
