"""Wire types of the admin procedures: what a conversation cost and why, and where the money goes.

Conventions shared by every figure here:

- a time window is ``[start, end)``; ``start`` and ``end`` carry an offset (a naive time is rejected);
- ``costUsd`` is the exact sum over *priced* calls. A call whose model has no known price is never counted as free:
  it adds to ``llmCalls``, ``unpricedCalls`` and the tokens, and nothing to ``costUsd``;
- ``llmCalls`` counts every recorded call, failed and cancelled ones included (a failed call may still have cost).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.money import Money
from schemas.registry import Access, query
from schemas.usage import (
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
    AwareDatetime,
    Cursor,
    InvalidInput,
    TimeZoneName,
    check_time_zone,
    check_window,
    decode_cursor,
)

__all__ = (
    "ADMIN_PROCEDURES",
    "BucketCosts",
    "BucketRates",
    "ConversationCost",
    "ConversationCostInput",
    "DateBucket",
    "Granularity",
    "InvalidInput",
    "ModelUsage",
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
    "UsageFigures",
    "UsageRow",
)

Granularity = Literal["day", "week", "month"]
"""Calendar buckets in the requested time zone; weeks start on Monday (ISO 8601)."""
ProcedureName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=500)]

LONGEST_RANGE: Final[dict[Granularity, timedelta]] = {
    "day": timedelta(days=1_100),
    "week": timedelta(days=3_660),
    "month": timedelta(days=3_660),
}
"""How far apart ``start`` and ``end`` of ``admin.usageByDateRange`` may be: bounds the number of buckets."""


# --- figures ------------------------------------------------------------------------------------------------------


class UsageFigures(WireOutput, frozen=True, kw_only=True):
    """Aggregates over recorded calls: ``llmCalls`` counts them all, failed and cancelled ones included."""

    llm_calls: int
    error_calls: int
    cancelled_calls: int
    unpriced_calls: int
    tokens: TokenCounts
    cost_usd: Annotated[Money, msgspec.Meta(description="Sum over the priced calls, USD.")]


class BucketRates(WireOutput, frozen=True, kw_only=True):
    """USD per 1,000,000 tokens of each bucket, as the call was priced."""

    input: Money
    cache_read: Money
    cache_write_5m: Money = msgspec.field(name="cacheWrite5m")
    cache_write_1h: Money = msgspec.field(name="cacheWrite1h")
    output: Money


class BucketCosts(WireOutput, frozen=True, kw_only=True):
    """USD charged for each bucket; they add up to the call's ``costUsd``."""

    input: Money
    cache_read: Money
    cache_write_5m: Money = msgspec.field(name="cacheWrite5m")
    cache_write_1h: Money = msgspec.field(name="cacheWrite1h")
    output: Money


class UsageRow(WireOutput, frozen=True, kw_only=True):
    """One recorded model call. ``costUsd``, ``costsUsd`` and ``ratesUsdPerMillionTokens`` are null when the call is
    unpriced."""

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
    """An optional ``[start, end)`` window: without ``start`` it is open to the past, without ``end`` to the future."""

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None

    def __post_init__(self) -> None:
        check_window(self.start, self.end)


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
    """``timeZone`` (IANA, e.g. ``Europe/Berlin``) decides where a day, week or month begins."""

    start: AwareDatetime
    end: AwareDatetime
    granularity: Granularity
    time_zone: TimeZoneName

    def __post_init__(self) -> None:
        check_window(self.start, self.end, longest=LONGEST_RANGE[self.granularity])
        check_time_zone(self.time_zone)


class DateBucket(UsageFigures, frozen=True, kw_only=True):
    """``start`` is the bucket's calendar start, with the requested zone's offset at that time (the first bucket may
    begin before the window's ``start``, but only calls inside the window are counted)."""

    start: datetime


class UsageByDateRange(WireOutput, frozen=True, kw_only=True):
    """Every bucket of the window, empty ones included (with zeros), oldest first; ``overall`` sums them."""

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
    """Per reported model, most expensive first."""

    start: datetime | None
    end: datetime | None
    models: list[ModelUsage]


class UsageByProcedureInput(_Window, frozen=True, kw_only=True):
    procedure: ProcedureName | None = None


class UsageByProcedure(WireOutput, frozen=True, kw_only=True):
    """Per procedure, most expensive first."""

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
    "Calls, tokens and cost per day, week or month of a window, in an explicit time zone.",
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
UNPRICED_CALLS = query(
    "admin.unpricedCalls",
    UnpricedCallsInput,
    UnpricedCalls,
    Access.ADMIN,
    "Calls recorded without a price, by model and newest first, so that prices can be added and rows repriced.",
)

ADMIN_PROCEDURES: Final = (
    GET_CONVERSATION_COST,
    USAGE_BY_DATE_RANGE,
    USAGE_BY_MODEL,
    USAGE_BY_PROCEDURE,
    TOP_CONVERSATIONS_BY_COST,
    UNPRICED_CALLS,
)
