"""What each console page shows, read through the same query helpers as the ``admin.*`` procedures.

Every figure here comes from ``server.admin.queries`` or ``server.budgets.service``, called with the input Struct the
matching procedure takes, so a page and the procedure it mirrors cannot disagree. A page's window is a range of whole
local days ``[start, end)`` in its time zone (``Window``); the procedures get the same window as times.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from schemas.admin import (
    CacheStatsInput,
    ConversationCost,
    ConversationCostInput,
    DateBucket,
    Granularity,
    ModelUsage,
    ProcedureUsage,
    TopConversation,
    TopConversationsInput,
    UsageByDateRange,
    UsageByDateRangeInput,
    UsageByModelInput,
    UsageByProcedureInput,
    UsageByUserInput,
    UsageRow,
    UserUsage,
)
from schemas.budgets import AlertRecord, Budget, ListAlertsInput, ListBudgetsInput
from schemas.money import Money
from schemas.reprice import RepriceRun, RepriceRunsInput
from schemas.usage import ModelShare
from schemas.validation import InvalidInput, check_time_zone, local_midnight
from server.admin import queries, reprice
from server.budgets import service as budgets
from server.console.chart import StackedChart, stacked_chart
from server.console.tables import Column, Table
from server.database import Database

__all__ = (
    "DEFAULT_DAYS",
    "Window",
    "alerts_page",
    "budgets_page",
    "conversation_page",
    "conversations_page",
    "models_page",
    "overview_page",
    "procedures_page",
    "reprice_runs_page",
    "users_page",
)

DEFAULT_DAYS: Final = 7
MAX_DAYS: Final = 1_100
"""The longest window (``admin.usageByDateRange`` by day)."""
PRESETS: Final = (("Today", 1), ("7 days", 7), ("30 days", 30), ("90 days", 90))


@dataclass(frozen=True, slots=True)
class Window:
    """Whole local days ``[start, end)`` in ``time_zone``; ``end`` is the day after the last one shown."""

    start: date
    end: date
    time_zone: str

    @classmethod
    def from_query(cls, query: Mapping[str, str], now: datetime | None = None) -> Window:
        """From ``?start=&end=&tz=`` (dates, ``end`` exclusive); the last ``DEFAULT_DAYS`` days up to today by
        default. Raises ``InvalidInput`` naming the parameter."""
        time_zone = query.get("tz") or "UTC"
        check_time_zone(time_zone, "tz")
        today = (now or datetime.now(ZoneInfo(time_zone))).astimezone(ZoneInfo(time_zone)).date()
        end = _date(query, "end") or today + timedelta(days=1)
        start = _date(query, "start") or end - timedelta(days=DEFAULT_DAYS)
        if start >= end:
            raise InvalidInput("start", "the range must start before it ends")
        if (end - start).days > MAX_DAYS:
            raise InvalidInput("start", f"a range covers at most {MAX_DAYS:,} days")
        return cls(start=start, end=end, time_zone=time_zone)

    def bounds(self) -> tuple[datetime, datetime]:
        return local_midnight(self.start, self.time_zone), local_midnight(self.end, self.time_zone)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def granularity(self) -> Granularity:
        return "hour" if self.days <= 2 else "day"

    def params(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "tz": self.time_zone}

    def query(self, **extra: str) -> str:
        return urlencode({**self.params(), **extra})

    def presets(self) -> list[tuple[str, str]]:
        today = datetime.now(ZoneInfo(self.time_zone)).date()
        end = today + timedelta(days=1)
        return [
            (label, urlencode({"start": (end - timedelta(days=days)).isoformat(), "end": end.isoformat()}))
            for label, days in PRESETS
        ]

    def date_range_input(self) -> UsageByDateRangeInput:
        start, end = self.bounds()
        return UsageByDateRangeInput(start=start, end=end, granularity=self.granularity, time_zone=self.time_zone)


def _date(query: Mapping[str, str], name: str) -> date | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(name, f"`{name}` must be a date (YYYY-MM-DD), got {raw!r}") from None


def money_sum(values: Sequence[Money | None]) -> Money | None:
    """The exact sum of the known amounts; None when there are amounts and none is known."""
    known = [value for value in values if value is not None]
    if values and not known:
        return None
    return Money(sum(known, Decimal(0)))


# --- overview -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Headline:
    """Spend over the last ``days`` local days (today included) against the ``days`` before them."""

    label: str
    versus: str
    cost_usd: Money | None
    previous_usd: Money | None

    @property
    def change_percent(self) -> float | None:
        if self.cost_usd is None or self.previous_usd is None or self.previous_usd == 0:
            return None
        return float((self.cost_usd - self.previous_usd) / self.previous_usd * 100)


def _headlines(buckets: Sequence[DateBucket]) -> list[Headline]:
    costs = [bucket.cost_usd for bucket in buckets]
    spans = (
        ("Today", "vs yesterday (whole day)", 1),
        ("7 days", "vs the 7 before", 7),
        ("30 days", "vs the 30 before", 30),
    )
    return [
        Headline(
            label=label,
            versus=versus,
            cost_usd=money_sum(costs[-days:]),
            previous_usd=money_sum(costs[-2 * days : -days]),
        )
        for label, versus, days in spans
    ]


@dataclass(frozen=True, slots=True)
class Gauge:
    """A budget as a ``<meter>``: its spend and reservations against its limit (floats for the bar only; the text
    beside it shows the exact amounts)."""

    budget: Budget

    @property
    def value(self) -> float:
        return float(self.budget.spent_usd + self.budget.reserved_usd)

    @property
    def maximum(self) -> float:
        return float(self.budget.limit_usd) or 1.0

    @property
    def low(self) -> float:
        return self.maximum * 0.8

    @property
    def high(self) -> float:
        return self.maximum * 0.95


CHART_GROUPS: Final = ("model", "procedure")
HEADLINE_SECONDS: Final = 30.0
"""How long the headline spends (60 days of daily buckets: the overview's most expensive read, about 100,000 rollup
rows at 1,000,000 calls over 90 days) are reused for the same zone and day before they are read again."""


@dataclass(slots=True)
class _HeadlineCache:
    """The headline spends per ``(time zone, local day)``, each kept ``HEADLINE_SECONDS``."""

    entries: dict[tuple[str, date], tuple[float, list[Headline]]]

    async def get(self, db: Database, time_zone: str, today: date) -> list[Headline]:
        now = time.monotonic()
        cached = self.entries.get((time_zone, today))
        if cached is not None and cached[0] > now:
            return cached[1]
        recent = await queries.get_usage_by_date_range(
            db,
            UsageByDateRangeInput(
                start=local_midnight(today - timedelta(days=59), time_zone),
                end=local_midnight(today + timedelta(days=1), time_zone),
                granularity="day",
                time_zone=time_zone,
            ),
        )
        headlines = _headlines(recent.buckets)
        self.entries = {key: entry for key, entry in self.entries.items() if entry[0] > now}
        self.entries[(time_zone, today)] = (now + HEADLINE_SECONDS, headlines)
        return headlines


_HEADLINES: Final = _HeadlineCache(entries={})


async def overview_page(db: Database, window: Window, by: str) -> dict[str, Any]:
    """The window's figures (``admin.usageByDateRange``), the stacked chart (the same buckets split by ``by``), the
    headline spends (the last 60 local days up to today, by day: at most ``HEADLINE_SECONDS`` old), budgets, the
    latest alerts, cache savings."""
    by = by if by in CHART_GROUPS else "model"
    today = datetime.now(ZoneInfo(window.time_zone)).date()
    start, end = window.bounds()
    usage, shares, headlines, budget_list, alerts, cache = await asyncio.gather(
        queries.get_usage_by_date_range(db, window.date_range_input()),
        queries.get_usage_by_date_range_and_group(db, window.date_range_input(), by),
        _HEADLINES.get(db, window.time_zone, today),
        budgets.list_budgets(db, ListBudgetsInput()),
        budgets.list_alerts(db, ListAlertsInput(limit=5)),
        queries.get_cache_stats(db, CacheStatsInput(start=start, end=end)),
    )
    parts = {(share.start, share.key): share.figures.cost_usd or Decimal(0) for share in shares}
    label_format = "%H:%M" if window.granularity == "hour" else "%m-%d"
    chart: StackedChart = stacked_chart([bucket.start for bucket in usage.buckets], parts, label_format)
    return {
        "usage": usage,
        "headlines": headlines,
        "chart": chart,
        "by": by,
        "budgets": [Gauge(budget) for budget in budget_list.budgets],
        "alerts": alerts.alerts,
        "cache": cache,
        "buckets": bucket_table(usage),
    }


def bucket_table(usage: UsageByDateRange) -> Table:
    time_format = "%Y-%m-%d %H:%M" if usage.granularity == "hour" else "%Y-%m-%d"
    return Table(
        name="buckets",
        title=f"Spend per {usage.granularity}",
        row_type=DateBucket,
        rows=usage.buckets,
        columns=[
            Column("start", usage.granularity.capitalize(), lambda b: b.start.strftime(time_format)),
            *_figure_columns(),
        ],
    )


def _figure_columns() -> list[Column]:
    return [
        Column("calls", "Calls", lambda f: f.llm_calls, "int"),
        Column("errors", "Errors", lambda f: f.error_calls, "int"),
        Column("cancelled", "Cancelled", lambda f: f.cancelled_calls, "int"),
        Column("unpriced", "Unpriced", lambda f: f.unpriced_calls, "int"),
        Column("prompt", "Prompt tokens", lambda f: f.tokens.prompt, "int"),
        Column("output", "Output tokens", lambda f: f.tokens.output, "int"),
        Column("cost", "Cost (USD)", lambda f: f.cost_usd, "money"),
    ]


# --- conversations ------------------------------------------------------------------------------------------------


async def conversations_page(db: Database, window: Window, base: str) -> dict[str, Any]:
    """The 100 most expensive conversations by what their calls in the window cost
    (``admin.topConversationsByCost``)."""
    start, end = window.bounds()
    top = await queries.get_top_conversations_by_cost(db, TopConversationsInput(start=start, end=end, limit=100))

    def link(row: TopConversation) -> str:
        return f"{base}/conversations/{row.conversation_id}?{window.query()}"

    table = Table(
        name="conversations",
        title="Most expensive conversations in the range",
        row_type=TopConversation,
        rows=top.conversations,
        columns=[
            Column("title", "Title", lambda c: c.title or str(c.conversation_id), link=link),
            Column("owner", "Owner", lambda c: c.owner_name),
            Column("calls", "Calls", lambda c: c.totals.llm_calls, "int"),
            Column("unpriced", "Unpriced", lambda c: c.totals.unpriced_calls, "int"),
            Column("tokens", "Tokens", lambda c: c.totals.total_tokens_used, "int"),
            Column("cost", "Cost in range (USD)", lambda c: c.totals.total_cost_usd, "money"),
            Column("last", "Last activity", lambda c: c.last_activity_at, "time"),
        ],
    )
    return {"table": table}


CALL_PAGE: Final = 100


async def conversation_page(db: Database, conversation_id: uuid.UUID, cursor: str | None) -> dict[str, Any]:
    """Why a conversation cost what it did (``admin.getConversationCost``): totals, models, procedures, calls."""
    cost: ConversationCost = await queries.get_usage_by_conversation(
        db, ConversationCostInput(conversation_id=conversation_id, limit=CALL_PAGE, cursor=cursor)
    )
    models = Table(
        name="models",
        title="By model",
        row_type=ModelShare,
        rows=cost.model_distribution,
        columns=[
            Column("model", "Model", lambda m: m.model),
            Column("calls", "Calls", lambda m: m.llm_calls, "int"),
            Column("unpriced", "Unpriced", lambda m: m.unpriced_calls, "int"),
            Column("tokens", "Tokens", lambda m: m.total_tokens_used, "int"),
            Column("cost", "Cost (USD)", lambda m: m.total_cost_usd, "money"),
        ],
    )
    procedures = Table(
        name="procedures",
        title="By procedure",
        row_type=ProcedureUsage,
        rows=cost.by_procedure,
        columns=[Column("procedure", "Procedure", lambda p: p.procedure), *_figure_columns()],
    )
    calls = Table(
        name="calls",
        title="Calls, newest first",
        row_type=UsageRow,
        rows=cost.rows,
        page_size=CALL_PAGE,
        next_cursor=cost.next_cursor,
        columns=[
            Column("at", "At", lambda r: r.created_at, "time"),
            Column("procedure", "Procedure", lambda r: r.procedure),
            Column("model", "Model", lambda r: r.model),
            Column("status", "Status", lambda r: r.status + (f" ({r.error_type})" if r.error_type else "")),
        ],
    )
    return {"cost": cost, "models": models, "procedures": procedures, "calls": calls}


# --- users, models, procedures ------------------------------------------------------------------------------------


async def users_page(db: Database, window: Window) -> dict[str, Any]:
    """Cost per user (``admin.usageByUser``, the 500 most expensive)."""
    start, end = window.bounds()
    usage = await queries.get_usage_by_user(db, UsageByUserInput(start=start, end=end, limit=500))
    table = Table(
        name="users",
        title="Cost per user",
        row_type=UserUsage,
        rows=usage.users,
        columns=[
            Column("name", "User", lambda u: u.name or ("(no user)" if u.user_id is None else str(u.user_id))),
            Column("id", "User id", lambda u: str(u.user_id) if u.user_id else ""),
            *_figure_columns(),
        ],
    )
    return {"table": table}


async def models_page(db: Database, window: Window) -> dict[str, Any]:
    """Per reported model (``admin.usageByModel``)."""
    start, end = window.bounds()
    usage = await queries.get_usage_by_model(db, UsageByModelInput(start=start, end=end))
    table = Table(
        name="models",
        title="Per model",
        row_type=ModelUsage,
        rows=usage.models,
        columns=[
            Column("model", "Model", lambda m: m.model),
            Column("provider", "Provider", lambda m: m.provider),
            *_figure_columns(),
        ],
    )
    return {"table": table}


async def procedures_page(db: Database, window: Window) -> dict[str, Any]:
    """Per procedure (``admin.usageByProcedure``)."""
    start, end = window.bounds()
    usage = await queries.get_usage_by_procedure(db, UsageByProcedureInput(start=start, end=end))
    table = Table(
        name="procedures",
        title="Per procedure",
        row_type=ProcedureUsage,
        rows=usage.procedures,
        columns=[Column("procedure", "Procedure", lambda p: p.procedure), *_figure_columns()],
    )
    return {"table": table}


# --- budgets and alerts -------------------------------------------------------------------------------------------


async def budgets_page(db: Database) -> dict[str, Any]:
    """Every budget with its current period (``admin.listBudgets``)."""
    budget_list = await budgets.list_budgets(db, ListBudgetsInput())
    table = Table(
        name="budgets",
        title="Budgets",
        row_type=Budget,
        rows=budget_list.budgets,
        columns=[
            Column("scope", "Scope", lambda b: b.scope),
            Column("subject", "Subject", lambda b: str(b.subject_id) if b.subject_id else "—"),
            Column("period", "Period", lambda b: b.period),
            Column("kind", "Kind", lambda b: "hard" if b.hard else "soft"),
            Column("limit", "Limit (USD)", lambda b: b.limit_usd, "money"),
            Column("spent", "Spent (USD)", lambda b: b.spent_usd, "money"),
            Column("reserved", "Reserved (USD)", lambda b: b.reserved_usd, "money"),
            Column("remaining", "Remaining (USD)", lambda b: b.remaining_usd, "money"),
            Column("resets", "Resets", lambda b: b.resets_at, "time"),
        ],
    )
    return {"table": table}


ALERT_PAGE: Final = 100


async def alerts_page(db: Database, cursor: str | None) -> dict[str, Any]:
    """Alerts newest first (``admin.listAlerts``), a page at a time."""
    alerts = await budgets.list_alerts(db, ListAlertsInput(limit=ALERT_PAGE, cursor=cursor))
    table = Table(
        name="alerts",
        title="Alerts, newest first",
        row_type=AlertRecord,
        rows=alerts.alerts,
        page_size=ALERT_PAGE,
        next_cursor=alerts.next_cursor,
        columns=[
            Column("at", "At", lambda a: a.created_at, "time"),
            Column("kind", "Kind", lambda a: a.kind),
            Column("summary", "Summary", lambda a: a.summary),
            Column("delivered", "Delivered", lambda a: a.delivered_at, "time"),
            Column("attempts", "Attempts", lambda a: a.attempts, "int"),
            Column("error", "Last error", lambda a: a.last_error),
        ],
    )
    return {"table": table}


RUN_PAGE: Final = 100


async def reprice_runs_page(db: Database, cursor: str | None) -> dict[str, Any]:
    """Reprice runs newest first (``admin.repriceRuns``), a page at a time."""
    runs = await reprice.list_runs(db, RepriceRunsInput(limit=RUN_PAGE, cursor=cursor))
    table = Table(
        name="runs",
        title="Reprice runs, newest first",
        row_type=RepriceRun,
        rows=runs.runs,
        page_size=RUN_PAGE,
        next_cursor=runs.next_cursor,
        columns=[
            Column("started", "Started", lambda r: r.started_at, "time"),
            Column("status", "Status", lambda r: r.status + (" (dry run)" if r.dry_run else "")),
            Column("reason", "Reason", lambda r: r.reason),
            Column("models", "Models", lambda r: ", ".join(r.model_filter) or "all"),
            Column("from", "Calls from", lambda r: r.start, "time"),
            Column("to", "Calls to", lambda r: r.end, "time"),
            Column("matched", "Matched", lambda r: r.matched_calls, "int"),
            Column("scanned", "Scanned", lambda r: r.scanned_calls, "int"),
            Column("changed", "Changed", lambda r: r.changed_calls, "int"),
            Column("newly", "Newly priced", lambda r: r.newly_priced_calls, "int"),
            Column("skipped", "Skipped", lambda r: r.skipped_calls, "int"),
            Column("delta", "Delta (USD)", lambda r: r.delta_usd, "money"),
            Column("finished", "Finished", lambda r: r.finished_at, "time"),
            Column("error", "Error", lambda r: r.error),
        ],
    )
    return {"table": table}
