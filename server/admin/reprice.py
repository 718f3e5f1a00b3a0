"""Repricing: the cost of recorded calls recomputed at the prices now known for their call time, never silently.

A price corrected after the fact (a negotiated rate from a date, a model that had no price) reaches history through
a run (``python -m server reprice``). A run walks the matching ``ai_usage_logs`` rows in keyset batches by
``(created_at, id)`` and prices each one as the core would have, with the same ``PriceCatalogue`` (genai-prices
and the project price file, each entry from its ``effective_from``) at the call's own time. A row whose cost would
not change is left alone, so running the same reprice twice changes nothing the second time.

A dry run only counts (rows, rows that would change, the exact total delta, per model). An applied run writes, per
batch and in ONE transaction: the new rates, costs, pricing status and price source of every changed row; one
``usage_cost_adjustments`` row per changed row (old and new figures, run id, reason); the deltas to the totals and
``model_distribution`` of their conversations; the 15-minute rollup (by the triggers on ``ai_usage_logs``); the spend
of every budget period that counts the call, with any threshold the new spend reaches alerted as settlement does;
and the run's cursor and figures. A run that stops (a crash, Ctrl-C, a lost database) has committed whole batches
only, and is resumed from its cursor (``--resume RUN_ID``), or simply run again.

Concurrency: calls recorded while a run applies are neither lost nor counted twice. A batch locks its usage rows
(``FOR UPDATE``, in key order) before reading their costs, so the old cost it subtracts is the one stored; totals and
spend move by atomic increments, as the recorder's do; the rollup triggers take free stripes (``SKIP LOCKED``).
Conversations are locked by id, budget periods by budget and start. The recorder's one statement may lock its
conversation and its budget periods in either order, so a batch waits at most ``_LOCK_TIMEOUT_MS`` for a lock and
then gives way (rolls back and is retried): the recording never waits long and is never the side a deadlock aborts.
A transaction-level advisory lock makes concurrent runs take turns batch by batch.

Not repriced: cache hits (they cost nothing: no provider call) and calls that consumed no tokens (free at any
price); and calls priced at a non-standard service tier (batch, flex...), because the usage row does not keep the
tier, only its mark in ``price_source``: they are counted as ``skipped``, never priced at the wrong tier.

Images and other buckets: every per-bucket column is named from ``BUCKETS`` (``<bucket>_tokens``, ``rate_<bucket>``,
``cost_<bucket>``, and the same names on ``TokenUsage``, ``BucketRates`` and ``PricedUsage``), so a bucket added to
the usage row and the pricing is one more name in that tuple.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Any, Final, TextIO

import asyncpg

from schemas.money import Money
from schemas.reprice import RepriceModelFigures, RepriceRuns, RepriceRunsInput
from schemas.reprice import RepriceRun as RepriceRunRecord
from schemas.validation import Position, decode_cursor, encode_cursor
from server.budgets.admission import APPLICABLE, COUNTED_SINCE_CREATION
from server.database import Connection, Database
from server.llm.pricing import PriceCatalogue, PricedUsage
from server.llm.usage import TokenUsage
from server.money import tidy

__all__ = (
    "BUCKETS",
    "PROMPT_BUCKETS",
    "ModelFigures",
    "RepriceError",
    "RepriceFilters",
    "RepriceRun",
    "list_runs",
    "priced_at_service_tier",
    "print_progress",
    "reprice",
    "resume",
)

BUCKETS: Final = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")
"""The billed token buckets, as named in the usage row's columns and in the pricing types (``BucketRates``' order)."""
PROMPT_BUCKETS: Final = ("input", "cache_read", "cache_write_5m", "cache_write_1h")
"""The buckets whose sum picks a prompt-size tier (``TokenUsage.prompt_total``)."""

_EXACT: Final = Context(prec=60, traps=[Inexact, InvalidOperation, Overflow])
"""Deltas and their sums are exact (NUMERIC(38, 18) amounts; the default context keeps 28 digits): it raises, never
rounds."""

_ADVISORY_LOCK: Final = 0x7265_7072_6963_65
"""``pg_advisory_xact_lock`` key every applying batch takes: concurrent runs take turns, batch by batch."""

_LOCK_TIMEOUT_MS: Final = 200
"""How long a batch waits for a row lock before it gives way and is retried. The recorder settles a call in one
statement whose updates (conversation, budget periods) may take their locks in either order; a batch holding some
of those rows must be the side that yields, well before PostgreSQL's deadlock check (1 s by default) could pick the
recording instead."""
_RETRIES: Final = 50

_NOT_REPRICED: Final = "status <> 'cache_hit' AND price_source IS DISTINCT FROM 'no tokens'"
"""Cache hits and calls without tokens: their cost is 0 whatever the price."""

_GENAI_TIER: Final = re.compile(r"^genai-prices \S+ \S+ ")
_FILE_TIER: Final = re.compile(r" from \S+ \S+ x[0-9.]+$")


def priced_at_service_tier(source: str | None) -> bool:
    """Whether ``price_source`` marks a call priced for a service tier (``pricing.py`` writes these marks)."""
    if source is None:
        return False
    return "no rates, standard applied)" in source or bool(_GENAI_TIER.match(source) or _FILE_TIER.search(source))


class RepriceError(Exception):
    """A run that cannot be done as asked (a run id that does not exist or is finished); the message says why."""


@dataclass(frozen=True, slots=True)
class RepriceFilters:
    """Which usage rows a run considers: ``since <= created_at < until`` (either open), of ``models`` (as reported;
    empty: every model)."""

    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    models: tuple[str, ...] = ()

    def where(self, first_parameter: int) -> tuple[str, list[object]]:
        """The SQL condition and its arguments, numbered from ``$first_parameter``."""
        conditions, arguments = [_NOT_REPRICED], list[object]()
        if self.since is not None:
            arguments.append(self.since)
            conditions.append(f"created_at >= ${first_parameter + len(arguments) - 1}")
        if self.until is not None:
            arguments.append(self.until)
            conditions.append(f"created_at < ${first_parameter + len(arguments) - 1}")
        if self.models:
            arguments.append(list(self.models))
            conditions.append(f"model = ANY(${first_parameter + len(arguments) - 1}::text[])")
        return " AND ".join(conditions), arguments


@dataclass(slots=True)
class ModelFigures:
    """A run's figures for one reported model: rows scanned, changed, newly priced, skipped, and the total delta."""

    scanned: int = 0
    changed: int = 0
    newly_priced: int = 0
    skipped: int = 0
    delta_usd: Decimal = Decimal(0)

    def add(self, other: ModelFigures) -> None:
        self.scanned += other.scanned
        self.changed += other.changed
        self.newly_priced += other.newly_priced
        self.skipped += other.skipped
        self.delta_usd = tidy(_EXACT.add(self.delta_usd, other.delta_usd))

    def as_json(self) -> dict[str, object]:
        return {
            "scanned": self.scanned,
            "changed": self.changed,
            "newly_priced": self.newly_priced,
            "skipped": self.skipped,
            "delta_usd": format(self.delta_usd, "f"),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ModelFigures:
        return cls(
            scanned=int(value["scanned"]),
            changed=int(value["changed"]),
            newly_priced=int(value["newly_priced"]),
            skipped=int(value["skipped"]),
            delta_usd=Decimal(value["delta_usd"]),
        )


@dataclass(slots=True)
class RepriceRun:
    """A run as it stands: its id, terms and figures (``matched``: rows matching the filters when it started)."""

    run_id: uuid.UUID
    dry_run: bool
    reason: str
    filters: RepriceFilters
    batch_size: int
    status: str = "running"
    matched: int = 0
    by_model: dict[str, ModelFigures] = field(default_factory=dict)
    cursor: tuple[datetime.datetime, uuid.UUID] | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None

    @property
    def totals(self) -> ModelFigures:
        total = ModelFigures()
        for figures in self.by_model.values():
            total.add(figures)
        return total

    def absorb(self, batch: dict[str, ModelFigures]) -> None:
        for model, figures in batch.items():
            self.by_model.setdefault(model, ModelFigures()).add(figures)

    def after(self, batch: dict[str, ModelFigures], cursor: tuple[datetime.datetime, uuid.UUID]) -> RepriceRun:
        """This run as it will stand once ``batch`` is committed (the run itself is unchanged until then)."""
        by_model = {model: dataclasses.replace(figures) for model, figures in self.by_model.items()}
        following = dataclasses.replace(self, by_model=by_model, cursor=cursor)
        following.absorb(batch)
        return following

    def by_model_json(self) -> str:
        return json.dumps({model: figures.as_json() for model, figures in sorted(self.by_model.items())})


# --- SQL ----------------------------------------------------------------------------------------------------------

# Only what pricing needs and what decides a change: the old rates and bucket costs of a changed row are copied into
# its adjustment by SQL, so a scan decodes one NUMERIC per row (decoding is most of a dry run's time).
_ROW_COLUMNS: Final = ", ".join(
    (
        "id, conversation_id, user_id, provider, model, created_at",
        "reasoning_tokens, prompt_tokens, completion_tokens, total_tokens, usage_estimated",
        *(f"{bucket}_tokens" for bucket in BUCKETS),
        "estimated_cost_usd, pricing_status, price_source",
    )
)

_INSERT_RUN: Final = """
INSERT INTO reprice_runs (id, status, dry_run, reason, since, until, models, batch_size, price_file, matched_calls)
VALUES ($1, 'running', $2, $3, $4, $5, $6::text[], $7, $8, $9)
RETURNING started_at
"""
_LOCK_RUN: Final = """
SELECT status, cursor_created_at, cursor_id, by_model::text AS by_model FROM reprice_runs WHERE id = $1 FOR UPDATE
"""
_SAVE_RUN: Final = """
UPDATE reprice_runs SET
    cursor_created_at = $2, cursor_id = $3, scanned_calls = $4, changed_calls = $5, newly_priced_calls = $6,
    skipped_calls = $7, delta_usd = $8, by_model = $9::jsonb
WHERE id = $1
"""
_FINISH_RUN: Final = """
UPDATE reprice_runs SET status = $2, finished_at = now(), error = $3 WHERE id = $1 RETURNING finished_at
"""
_RESUME_RUN: Final = """
UPDATE reprice_runs SET status = 'running', finished_at = NULL, error = NULL
WHERE id = $1 AND status <> 'completed'
RETURNING dry_run, reason, since, until, models, batch_size, matched_calls, by_model::text AS by_model,
          cursor_created_at, cursor_id, started_at
"""

_UPDATE_USAGE: Final = f"""
UPDATE ai_usage_logs u SET
    {", ".join(f"rate_{b} = n.rate_{b}, cost_{b} = n.cost_{b}" for b in BUCKETS)},
    estimated_cost_usd = n.cost, pricing_status = n.pricing_status, price_source = n.price_source,
    price_tier = n.price_tier
FROM unnest($1::uuid[], {", ".join(f"${2 * i + 2}::numeric[], ${2 * i + 3}::numeric[]" for i in range(len(BUCKETS)))},
            ${2 * len(BUCKETS) + 2}::numeric[], ${2 * len(BUCKETS) + 3}::text[], ${2 * len(BUCKETS) + 4}::text[],
            ${2 * len(BUCKETS) + 5}::text[])
     AS n(id, {", ".join(f"rate_{b}, cost_{b}" for b in BUCKETS)}, cost, pricing_status, price_source, price_tier)
WHERE u.id = n.id
"""

_OLD_BUCKETS: Final = (
    "jsonb_build_object("
    + ", ".join(
        f"'{b}', jsonb_build_object('rate', trim_scale(u.rate_{b})::text, 'cost', trim_scale(u.cost_{b})::text)"
        for b in BUCKETS
    )
    + ")"
)
# Before the usage rows are updated: the old figures are read from them.
_INSERT_ADJUSTMENTS: Final = f"""
INSERT INTO usage_cost_adjustments (
    run_id, reason, usage_id, call_id, conversation_id, model, call_created_at, old_cost_usd, new_cost_usd, delta_usd,
    old_pricing_status, new_pricing_status, old_price_source, new_price_source, old_price_tier, new_price_tier,
    old_buckets, new_buckets
)
SELECT $1, $2, u.id, u.call_id, u.conversation_id, u.model, u.created_at, u.estimated_cost_usd, n.cost, n.delta,
       u.pricing_status, n.pricing_status, u.price_source, n.price_source, u.price_tier, n.price_tier,
       {_OLD_BUCKETS}, n.buckets
FROM unnest($3::uuid[], $4::numeric[], $5::numeric[], $6::text[], $7::text[], $8::text[], $9::jsonb[])
     AS n(id, cost, delta, pricing_status, price_source, price_tier, buckets)
JOIN ai_usage_logs u ON u.id = n.id
"""

_LOCK_CONVERSATIONS: Final = "SELECT id FROM conversations WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
_UPDATE_CONVERSATIONS: Final = """
WITH d AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::int[]) AS d(conversation_id, model, cost, unpriced)
)
UPDATE conversations c SET
    total_cost_usd = c.total_cost_usd + t.cost,
    unpriced_calls = c.unpriced_calls + t.unpriced,
    model_distribution = c.model_distribution || (
        SELECT jsonb_object_agg(d.model, coalesce(c.model_distribution -> d.model, '{}'::jsonb) || jsonb_build_object(
            'unpriced', coalesce((c.model_distribution -> d.model ->> 'unpriced')::bigint, 0) + d.unpriced,
            'cost_usd', (coalesce((c.model_distribution -> d.model ->> 'cost_usd')::numeric, 0) + d.cost)::text))
        FROM d WHERE d.conversation_id = c.id)
FROM (SELECT conversation_id, sum(cost) AS cost, sum(unpriced)::int AS unpriced FROM d GROUP BY 1) AS t
WHERE c.id = t.conversation_id
"""

_UPDATE_BUDGETS: Final = f"""
WITH d AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::numeric[])
        AS d(user_id, conversation_id, created_at, delta)
), per_period AS (
    SELECT b.id AS budget_id, budget_period_start(b.period, d.created_at) AS period_start, sum(d.delta) AS delta
    FROM d
    JOIN budgets b ON {APPLICABLE.format(user="d.user_id", conversation="d.conversation_id")}
    WHERE {COUNTED_SINCE_CREATION.format(at="d.created_at")}
    GROUP BY 1, 2
), budgeted AS (
    INSERT INTO budget_periods AS p (budget_id, period_start, spent_usd)
    SELECT budget_id, period_start, delta FROM per_period
    ORDER BY budget_id, period_start
    ON CONFLICT (budget_id, period_start) DO UPDATE SET spent_usd = p.spent_usd + excluded.spent_usd
    RETURNING p.budget_id, p.period_start, p.spent_usd
)
-- Each threshold the new spend reaches, once per budget, period and threshold, as settlement alerts.
INSERT INTO budget_alerts (
    id, kind, budget_id, scope, subject_id, period, period_start, threshold, limit_usd, spent_usd
)
SELECT gen_random_uuid(), 'threshold', b.id, b.scope, b.subject_id, b.period, r.period_start, t.threshold,
       b.limit_usd, r.spent_usd
FROM budgeted r
JOIN per_period d ON d.budget_id = r.budget_id AND d.period_start = r.period_start
JOIN budgets b ON b.id = r.budget_id
CROSS JOIN LATERAL unnest(b.alert_thresholds) AS t(threshold)
WHERE d.delta > 0 AND r.spent_usd >= t.threshold * b.limit_usd
ON CONFLICT DO NOTHING
"""


# --- pricing a row ------------------------------------------------------------------------------------------------


def _usage(row: asyncpg.Record) -> TokenUsage:
    buckets = {bucket: row[f"{bucket}_tokens"] for bucket in BUCKETS}
    return TokenUsage(
        **buckets,
        reasoning=row["reasoning_tokens"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        total_tokens=row["total_tokens"],
        estimated=row["usage_estimated"],
    )


def _new_buckets(priced: PricedUsage) -> dict[str, dict[str, str | None]]:
    buckets: dict[str, dict[str, str | None]] = {}
    for bucket in BUCKETS:
        rate = None if priced.rates is None else getattr(priced.rates, bucket)
        cost = getattr(priced, f"cost_{bucket}")
        buckets[bucket] = {
            "rate": None if rate is None else format(rate, "f"),
            "cost": None if cost is None else format(cost, "f"),
        }
    return buckets


def _changes(row: asyncpg.Record, priced: PricedUsage) -> bool:
    """Whether the row's cost changes: its total or whether it is priced at all (a cost moved between buckets with
    the same total is not a change of cost)."""
    changed: bool = priced.status != row["pricing_status"] or priced.total_cost != row["estimated_cost_usd"]
    return changed


def _unchanged_at_a_glance(row: asyncpg.Record, catalogue: PriceCatalogue) -> bool:
    """True when the row's new total is its stored one (most rows of a run): then no full pricing is needed. A
    False is only a maybe: ``_changes`` decides on the full price."""
    tokens = tuple(row[f"{bucket}_tokens"] for bucket in BUCKETS)
    prompt_total = sum(row[f"{bucket}_tokens"] for bucket in PROMPT_BUCKETS)
    total = catalogue.standard_total(row["provider"], row["model"], tokens, prompt_total, row["created_at"])
    if total is None:
        return bool(row["pricing_status"] == "unpriced")
    same: bool = row["pricing_status"] == "priced" and total == row["estimated_cost_usd"]
    return same


@dataclass(slots=True)
class _Change:
    row: asyncpg.Record
    priced: PricedUsage

    @property
    def delta(self) -> Decimal:
        return tidy(_EXACT.subtract(self.priced.total_cost or Decimal(0), self.row["estimated_cost_usd"] or Decimal(0)))

    @property
    def unpriced_delta(self) -> int:
        was_unpriced: bool = self.row["pricing_status"] == "unpriced"
        return int(self.priced.status == "unpriced") - int(was_unpriced)


def _price_batch(
    rows: Sequence[asyncpg.Record], catalogue: PriceCatalogue
) -> tuple[list[_Change], dict[str, ModelFigures]]:
    changes: list[_Change] = []
    figures: dict[str, ModelFigures] = {}
    for row in rows:
        model = figures.setdefault(row["model"], ModelFigures())
        model.scanned += 1
        if priced_at_service_tier(row["price_source"]):
            model.skipped += 1
            continue
        if _unchanged_at_a_glance(row, catalogue):
            continue
        priced = catalogue.price(row["provider"], row["model"], _usage(row), row["created_at"])
        if not _changes(row, priced):
            continue
        change = _Change(row, priced)
        changes.append(change)
        model.changed += 1
        model.delta_usd = tidy(_EXACT.add(model.delta_usd, change.delta))
        if row["pricing_status"] == "unpriced" and priced.status == "priced":
            model.newly_priced += 1
    return changes, figures


# --- writing a batch ----------------------------------------------------------------------------------------------


async def _apply(connection: Connection, run: RepriceRun, changes: list[_Change]) -> None:
    rows = [change.row for change in changes]
    priced = [change.priced for change in changes]
    bucket_arguments: list[list[Decimal | None]] = []
    for bucket in BUCKETS:
        bucket_arguments.append([None if p.rates is None else getattr(p.rates, bucket) for p in priced])
        bucket_arguments.append([getattr(p, f"cost_{bucket}") for p in priced])
    await connection.execute(
        _INSERT_ADJUSTMENTS,
        run.run_id,
        run.reason,
        [row["id"] for row in rows],
        [p.total_cost for p in priced],
        [change.delta for change in changes],
        [p.status for p in priced],
        [p.source for p in priced],
        [p.tier for p in priced],
        [json.dumps(_new_buckets(p)) for p in priced],
    )
    await connection.execute(
        _UPDATE_USAGE,
        [row["id"] for row in rows],
        *bucket_arguments,
        [p.total_cost for p in priced],
        [p.status for p in priced],
        [p.source for p in priced],
        [p.tier for p in priced],
    )
    shares: dict[tuple[uuid.UUID, str], tuple[Decimal, int]] = {}
    for change in changes:
        conversation_id = change.row["conversation_id"]
        if conversation_id is None:
            continue
        key = (conversation_id, change.row["model"])
        cost, unpriced = shares.get(key, (Decimal(0), 0))
        shares[key] = (tidy(_EXACT.add(cost, change.delta)), unpriced + change.unpriced_delta)
    if shares:
        await connection.execute(_LOCK_CONVERSATIONS, list({key[0] for key in shares}))
        await connection.execute(
            _UPDATE_CONVERSATIONS,
            [key[0] for key in shares],
            [key[1] for key in shares],
            [value[0] for value in shares.values()],
            [value[1] for value in shares.values()],
        )
    spending = [change for change in changes if change.delta != 0]
    if spending:
        await connection.execute(
            _UPDATE_BUDGETS,
            [change.row["user_id"] for change in spending],
            [change.row["conversation_id"] for change in spending],
            [change.row["created_at"] for change in spending],
            [change.delta for change in spending],
        )


async def _save(connection: Connection, run: RepriceRun) -> None:
    totals = run.totals
    created_at, row_id = run.cursor if run.cursor is not None else (None, None)
    await connection.execute(
        _SAVE_RUN,
        run.run_id,
        created_at,
        row_id,
        totals.scanned,
        totals.changed,
        totals.newly_priced,
        totals.skipped,
        totals.delta_usd,
        run.by_model_json(),
    )


def _batch_query(filters: RepriceFilters, *, after: bool, lock: bool) -> tuple[str, list[object]]:
    """The next batch's rows in key order (``$1`` the limit; with ``after``, ``$2, $3`` the cursor)."""
    first = 4 if after else 2
    where, arguments = filters.where(first)
    if after:
        where += " AND (created_at, id) > ($2::timestamptz, $3::uuid)"
    sql = f"SELECT {_ROW_COLUMNS} FROM ai_usage_logs WHERE {where} ORDER BY created_at, id LIMIT $1"
    return sql + (" FOR UPDATE" if lock else ""), arguments


async def _next_rows(
    connection: Connection | Database, run: RepriceRun, cursor: tuple[datetime.datetime, uuid.UUID] | None, lock: bool
) -> list[asyncpg.Record]:
    sql, arguments = _batch_query(run.filters, after=cursor is not None, lock=lock)
    position = list(cursor) if cursor is not None else []
    return await connection.fetch(sql, run.batch_size, *position, *arguments)


async def _apply_batch_once(db: Database, run: RepriceRun, catalogue: PriceCatalogue) -> tuple[RepriceRun, int] | None:
    """One batch in one transaction; returns the run as it stands after it and the rows scanned (None: through)."""
    async with db.transaction() as connection:
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _ADVISORY_LOCK)
        state = await connection.fetchrow(_LOCK_RUN, run.run_id)
        if state is None or state["status"] != "running":
            raise RepriceError(f"reprice run {run.run_id} is no longer running (another process finished it)")
        await connection.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT_MS}ms'")
        # The run's cursor and figures as committed: another process resuming the same run may have moved them.
        cursor = None if state["cursor_id"] is None else (state["cursor_created_at"], state["cursor_id"])
        committed = dataclasses.replace(run, by_model=_figures(state["by_model"]), cursor=cursor)
        rows = await _next_rows(connection, run, cursor, lock=True)
        if not rows:
            run.by_model, run.cursor = committed.by_model, cursor
            return None
        changes, figures = _price_batch(rows, catalogue)
        if changes:
            await _apply(connection, run, changes)
        following = committed.after(figures, (rows[-1]["created_at"], rows[-1]["id"]))
        await _save(connection, following)
    return following, len(rows)


def _figures(by_model: str) -> dict[str, ModelFigures]:
    return {model: ModelFigures.from_json(value) for model, value in json.loads(by_model).items()}


async def _apply_batch(db: Database, run: RepriceRun, catalogue: PriceCatalogue) -> int:
    """One batch, retried when it gave way to a recording transaction; returns the rows scanned (0: through)."""
    for attempt in range(_RETRIES + 1):
        try:
            outcome = await _apply_batch_once(db, run, catalogue)
        except (asyncpg.DeadlockDetectedError, asyncpg.LockNotAvailableError):
            if attempt == _RETRIES:
                raise
            await asyncio.sleep(0.02 * (attempt + 1))
            continue
        if outcome is None:
            return 0
        following, scanned = outcome
        run.by_model, run.cursor = following.by_model, following.cursor
        return scanned
    raise AssertionError("unreachable")


async def _dry_batch(db: Database, run: RepriceRun, catalogue: PriceCatalogue) -> int:
    rows = await _next_rows(db, run, run.cursor, lock=False)
    if not rows:
        return 0
    _, figures = _price_batch(rows, catalogue)
    run.cursor = (rows[-1]["created_at"], rows[-1]["id"])
    run.absorb(figures)
    return len(rows)


# --- running ------------------------------------------------------------------------------------------------------


Progress = Callable[[RepriceRun, int, float], None]
"""Called every ``progress_every`` batches with the run, the rows done so far in this process and the seconds."""


def print_progress(stream: TextIO = sys.stderr) -> Progress:
    def report(run: RepriceRun, done: int, seconds: float) -> None:
        totals = run.totals
        rate = done / seconds if seconds > 0 else 0.0
        share = f" ({100 * totals.scanned / run.matched:.1f} %)" if run.matched else ""
        print(
            f"reprice {run.run_id}: {totals.scanned:,} / {run.matched:,} rows{share}, {totals.changed:,} changed, "
            f"{rate:,.0f} rows/s",
            file=stream,
            flush=True,
        )

    return report


async def _count(db: Database, filters: RepriceFilters) -> int:
    where, arguments = filters.where(1)
    count: int = await db.fetchval(f"SELECT count(*) FROM ai_usage_logs WHERE {where}", *arguments)
    return count


async def _walk(
    db: Database,
    run: RepriceRun,
    catalogue: PriceCatalogue,
    *,
    progress: Progress | None,
    progress_every: int,
) -> RepriceRun:
    started, done, batches = time.perf_counter(), 0, 0
    step = _dry_batch if run.dry_run else _apply_batch
    try:
        while True:
            scanned = await step(db, run, catalogue)
            if scanned == 0:
                break
            done += scanned
            batches += 1
            if progress is not None and batches % progress_every == 0:
                progress(run, done, time.perf_counter() - started)
    except BaseException as error:
        await _finish(db, run, "failed", f"{type(error).__name__}: {error}")
        raise
    if progress is not None and batches % progress_every != 0:
        progress(run, done, time.perf_counter() - started)
    await _finish(db, run, "completed", None)
    return run


async def _finish(db: Database, run: RepriceRun, status: str, error: str | None) -> None:
    run.status = status
    try:
        async with db.transaction() as connection:
            if run.dry_run:
                await _save(connection, run)
            run.finished_at = await connection.fetchval(_FINISH_RUN, run.run_id, status, error)
    except Exception:
        if status == "completed":
            raise
        # The run stays `running` with its last committed batch: `--resume` continues it all the same.


async def reprice(
    db: Database,
    catalogue: PriceCatalogue,
    filters: RepriceFilters,
    *,
    dry_run: bool,
    reason: str = "",
    batch_size: int = 5_000,
    price_file: str | None = None,
    progress: Progress | None = None,
    progress_every: int = 10,
) -> RepriceRun:
    """Reprice the rows ``filters`` match at ``catalogue``'s prices for their call time; see the module docstring.

    ``dry_run`` counts only. The run is recorded in ``reprice_runs`` (``price_file``: the name of the price file the
    catalogue was loaded from, for the record). Returns the run with its figures; raises what the database raises,
    after marking the run ``failed`` (whole batches stay applied; ``resume`` continues).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    run = RepriceRun(
        run_id=uuid.uuid4(), dry_run=dry_run, reason=reason, filters=filters, batch_size=batch_size, status="running"
    )
    run.matched = await _count(db, filters)
    run.started_at = await db.fetchval(
        _INSERT_RUN,
        run.run_id,
        dry_run,
        reason,
        filters.since,
        filters.until,
        list(filters.models),
        batch_size,
        price_file,
        run.matched,
    )
    return await _walk(db, run, catalogue, progress=progress, progress_every=progress_every)


async def resume(
    db: Database,
    catalogue: PriceCatalogue,
    run_id: uuid.UUID,
    *,
    batch_size: int | None = None,
    progress: Progress | None = None,
    progress_every: int = 10,
) -> RepriceRun:
    """Continue a run that stopped (``running`` in a dead process, or ``failed``) from its cursor, with its filters
    and reason, at ``catalogue``'s prices. Raises ``RepriceError`` for an unknown or completed run."""
    row = await db.fetchrow(_RESUME_RUN, run_id)
    if row is None:
        exists = await db.fetchval("SELECT EXISTS (SELECT 1 FROM reprice_runs WHERE id = $1)", run_id)
        raise RepriceError(f"reprice run {run_id} is {'already completed' if exists else 'unknown'}")
    run = RepriceRun(
        run_id=run_id,
        dry_run=row["dry_run"],
        reason=row["reason"],
        filters=RepriceFilters(since=row["since"], until=row["until"], models=tuple(row["models"])),
        batch_size=batch_size or row["batch_size"],
        matched=row["matched_calls"],
        by_model=_figures(row["by_model"]),
        cursor=None if row["cursor_id"] is None else (row["cursor_created_at"], row["cursor_id"]),
        started_at=row["started_at"],
    )
    if run.dry_run:  # a dry run keeps no cursor worth trusting: it starts again
        run.by_model, run.cursor = {}, None
    return await _walk(db, run, catalogue, progress=progress, progress_every=progress_every)


# --- admin.repriceRuns --------------------------------------------------------------------------------------------

_RUN_COLUMNS: Final = """
    id, status, dry_run, reason, since, until, models, price_file, started_at, finished_at, matched_calls,
    scanned_calls, changed_calls, newly_priced_calls, skipped_calls, delta_usd, by_model::text AS by_model, error"""
_RUNS: Final = f"SELECT {_RUN_COLUMNS} FROM reprice_runs ORDER BY started_at DESC, id DESC LIMIT $1"
_RUNS_AFTER: Final = f"""
SELECT {_RUN_COLUMNS} FROM reprice_runs
WHERE (started_at, id) < ($2, $3)
ORDER BY started_at DESC, id DESC
LIMIT $1
"""


def _run_record(row: asyncpg.Record) -> RepriceRunRecord:
    figures = _figures(row["by_model"])
    models = [
        RepriceModelFigures(
            model=model,
            scanned_calls=f.scanned,
            changed_calls=f.changed,
            newly_priced_calls=f.newly_priced,
            skipped_calls=f.skipped,
            delta_usd=Money(f.delta_usd),
        )
        for model, f in sorted(figures.items(), key=lambda item: (-item[1].changed, item[0]))
    ]
    return RepriceRunRecord(
        run_id=row["id"],
        status=row["status"],
        dry_run=row["dry_run"],
        reason=row["reason"],
        start=row["since"],
        end=row["until"],
        model_filter=list(row["models"]),
        price_file=row["price_file"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        matched_calls=row["matched_calls"],
        scanned_calls=row["scanned_calls"],
        changed_calls=row["changed_calls"],
        newly_priced_calls=row["newly_priced_calls"],
        skipped_calls=row["skipped_calls"],
        delta_usd=row["delta_usd"],
        models=models,
        error=row["error"],
    )


async def list_runs(db: Database, data: RepriceRunsInput) -> RepriceRuns:
    """Reprice runs newest first, ``data.limit`` a page, after ``data.cursor`` when given."""
    if data.cursor is None:
        rows = await db.fetch(_RUNS, data.limit + 1)
    else:
        after = decode_cursor(data.cursor)
        rows = await db.fetch(_RUNS_AFTER, data.limit + 1, after.at, after.id)
    page = rows[: data.limit]
    next_cursor = (
        encode_cursor(Position(at=page[-1]["started_at"], id=page[-1]["id"])) if len(rows) > data.limit else None
    )
    return RepriceRuns(runs=[_run_record(row) for row in page], next_cursor=next_cursor)
