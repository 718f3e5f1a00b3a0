"""Budgets as an admin sets and reads them, and their alerts as stored: the SQL behind ``admin.setBudget``,
``admin.deleteBudget``, ``admin.listBudgets``, ``admin.listAlerts`` and ``chat.getBudgetStatus``.

A budget's figures are those of its current UTC period (``budget_period_start``), read from ``budget_periods``
beside the budget: a period nobody has spent in yet has no row, and reads as zero. Changing a budget keeps its id,
hence its spend so far. Admission and settlement (``server.budgets.admission``, ``server.llm.recorder``) write the
periods and the threshold alerts; nothing here does, except the one case settlement cannot see: a change of limit or
thresholds that puts the period's spend at or over a threshold alerts at once (still once per budget, period and
threshold, by the unique index).
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import asyncpg

from schemas.budgets import (
    AlertList,
    AlertRecord,
    Budget,
    BudgetAlert,
    BudgetList,
    ListAlertsInput,
    ListBudgetsInput,
    SetBudgetInput,
)
from schemas.money import Money, format_money
from schemas.validation import Position, decode_cursor, encode_cursor
from server.budgets.admission import APPLICABLE, period_end
from server.database import Connection, Database
from server.errors import BudgetNotFoundError, BudgetSubjectNotFoundError

__all__ = (
    "alert_from_row",
    "alert_record_from_row",
    "delete_budget",
    "get_budget_status",
    "list_alerts",
    "list_budgets",
    "log_new_alert",
    "set_budget",
)

logger: Final = logging.getLogger("tollbooth.budgets")

_STATE: Final = """
SELECT b.id, b.scope, b.subject_id, b.period, b.limit_usd, b.hard, b.alert_thresholds,
       budget_period_start(b.period, $1) AS period_start,
       coalesce(p.spent_usd, 0) AS spent_usd, coalesce(p.reserved_usd, 0) AS reserved_usd
FROM budgets b
LEFT JOIN budget_periods p ON p.budget_id = b.id AND p.period_start = budget_period_start(b.period, $1)
"""
"""Every budget with its period holding ``$1``; callers add a WHERE clause (parameters from ``$2``)."""
_ORDER: Final = """
ORDER BY array_position(ARRAY['global', 'user', 'conversation']::text[], b.scope::text), b.subject_id,
         array_position(ARRAY['day', 'week', 'month', 'total']::text[], b.period::text), b.id
"""

_APPLYING_TO_USER: Final = """
WHERE b.scope = 'global'
   OR (b.scope = 'user' AND b.subject_id = $2)
   OR (b.scope = 'conversation'
       AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = b.subject_id AND c.owner = $2))
"""

_SUBJECT_EXISTS: Final = {
    "user": "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)",
    "conversation": "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)",
}
_UPSERT: Final = """
INSERT INTO budgets AS b (id, scope, subject_id, period, limit_usd, hard, alert_thresholds)
VALUES ($1, $2, $3, $4, $5, $6, $7::numeric[])
ON CONFLICT (scope, coalesce(subject_id, '00000000-0000-0000-0000-000000000000'::uuid), period) DO UPDATE SET
    limit_usd = excluded.limit_usd,
    hard = excluded.hard,
    alert_thresholds = excluded.alert_thresholds,
    updated_at = now()
RETURNING b.id, (b.xmax = 0) AS created
"""
_ALERT_COLUMNS: Final = """
    id, kind, budget_id, scope, subject_id, period, period_start, threshold, limit_usd, spent_usd, baseline_usd,
    created_at, delivered_at, attempts, last_error,
    CASE WHEN delivered_at IS NULL AND isfinite(next_attempt_at) THEN next_attempt_at END AS next_attempt_at"""
# The thresholds the current period's spend already reached under the budget's (new) terms.
_ALERT_REACHED: Final = f"""
INSERT INTO budget_alerts AS a (
    id, kind, budget_id, scope, subject_id, period, period_start, threshold, limit_usd, spent_usd
)
SELECT gen_random_uuid(), 'threshold', b.id, b.scope, b.subject_id, b.period, p.period_start, t.threshold,
       b.limit_usd, p.spent_usd
FROM budgets b
JOIN budget_periods p ON p.budget_id = b.id AND p.period_start = budget_period_start(b.period, $2)
CROSS JOIN LATERAL unnest(b.alert_thresholds) AS t(threshold)
WHERE b.id = $1 AND p.spent_usd > 0 AND p.spent_usd >= t.threshold * b.limit_usd
ORDER BY t.threshold
ON CONFLICT DO NOTHING
RETURNING {_ALERT_COLUMNS}
"""
_DELETE: Final = "DELETE FROM budgets WHERE id = $1"
_ALERTS: Final = f"""
SELECT {_ALERT_COLUMNS}
FROM budget_alerts
ORDER BY created_at DESC, id DESC
LIMIT $1
"""
_ALERTS_AFTER: Final = f"""
SELECT {_ALERT_COLUMNS}
FROM budget_alerts
WHERE (created_at, id) < ($2, $3)
ORDER BY created_at DESC, id DESC
LIMIT $1
"""


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) if now is None else now


def _budget(row: asyncpg.Record) -> Budget:
    limit, spent, reserved = row["limit_usd"], row["spent_usd"], row["reserved_usd"]
    return Budget(
        budget_id=row["id"],
        scope=row["scope"],
        subject_id=row["subject_id"],
        period=row["period"],
        limit_usd=limit,
        hard=row["hard"],
        alert_thresholds=[float(t) for t in row["alert_thresholds"]],
        period_start=row["period_start"],
        resets_at=period_end(row["period"], row["period_start"]),
        spent_usd=spent,
        reserved_usd=reserved,
        remaining_usd=Money(max(limit - spent - reserved, Decimal(0))),
    )


def _thresholds(values: Sequence[float]) -> list[Decimal]:
    """Sorted, without duplicates, as exact decimals of their JSON spelling (``0.8``, never 0.8000000000000000444)."""
    return [Decimal(repr(value)) for value in sorted(set(values))]


def _whose(scope: str | None, subject_id: uuid.UUID | None) -> str:
    return "the global" if subject_id is None else f"{scope} {subject_id}'s"


def _summary(row: asyncpg.Record) -> str:
    start: datetime.datetime = row["period_start"].astimezone(datetime.UTC)
    if row["kind"] == "spike":
        baseline: Decimal = row["baseline_usd"]
        ratio = row["spent_usd"] / baseline if baseline else None
        times = f"{ratio:.1f} times" if ratio is not None else "above"
        return (
            f"spend spike: USD {format_money(row['spent_usd'])} in the hour from {start:%Y-%m-%d %H:%M} UTC, "
            f"{times} the trailing average of USD {format_money(baseline)} an hour"
        )
    window = {"day": "daily", "week": "weekly", "month": "monthly"}.get(row["period"], row["period"])
    since = "in total" if row["period"] == "total" else f"since {start:%Y-%m-%d %H:%M} UTC"
    percent = format_money(row["threshold"] * 100)
    return (
        f"{_whose(row['scope'], row['subject_id'])} {window} budget of USD {format_money(row['limit_usd'])}: "
        f"{percent} % reached, USD {format_money(row['spent_usd'])} spent {since}"
    )


def _alert_fields(row: asyncpg.Record) -> dict[str, Any]:
    threshold = row["threshold"]
    return {
        "alert_id": row["id"],
        "kind": row["kind"],
        "budget_id": row["budget_id"],
        "scope": row["scope"],
        "subject_id": row["subject_id"],
        "period": row["period"],
        "period_start": row["period_start"],
        "threshold": None if threshold is None else float(threshold),
        "limit_usd": row["limit_usd"],
        "spent_usd": row["spent_usd"],
        "baseline_usd": row["baseline_usd"],
        "created_at": row["created_at"],
        "summary": _summary(row),
    }


def alert_from_row(row: asyncpg.Record) -> BudgetAlert:
    """What a ``budget_alerts`` row says (the webhook's body)."""
    return BudgetAlert(**_alert_fields(row))


def alert_record_from_row(row: asyncpg.Record) -> AlertRecord:
    """A ``budget_alerts`` row with its delivery (``next_attempt_at`` as ``_ALERT_COLUMNS`` reads it)."""
    return AlertRecord(
        **_alert_fields(row),
        delivered_at=row["delivered_at"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
    )


def log_new_alert(alert: BudgetAlert) -> None:
    logger.warning("alert %s created (%s): %s", alert.alert_id, alert.kind, alert.summary)


async def _state(connection: Connection | Database, now: datetime.datetime, budget_id: uuid.UUID) -> Budget | None:
    row = await connection.fetchrow(_STATE + "WHERE b.id = $2", now, budget_id)
    return None if row is None else _budget(row)


_OPEN_WITH_SPEND: Final = f"""
INSERT INTO budget_periods (budget_id, period_start, spent_usd)
SELECT b.id, budget_period_start(b.period, $2), coalesce((
    SELECT sum(u.estimated_cost_usd) FROM ai_usage_logs u
    WHERE u.created_at >= budget_period_start(b.period, $2)
      AND {APPLICABLE.format(user="u.user_id", conversation="u.conversation_id")}
), 0)
FROM budgets b
WHERE b.id = $1
ON CONFLICT (budget_id, period_start) DO NOTHING
"""
"""The current period of a new budget, with the spend its period has already seen (calls in its scope)."""


async def set_budget(db: Database, data: SetBudgetInput, *, now: datetime.datetime | None = None) -> Budget:
    """Create the budget of ``(scope, subject_id, period)`` or change its terms; returns it with its current period.

    Raises ``BudgetSubjectNotFoundError`` when ``subject_id`` names no user or conversation of the scope.
    """
    now = _now(now)
    async with db.transaction() as connection:
        if data.scope != "global":
            assert data.subject_id is not None  # SetBudgetInput checks it
            if not await connection.fetchval(_SUBJECT_EXISTS[data.scope], data.subject_id):
                raise BudgetSubjectNotFoundError(data.scope, data.subject_id)
        row = await connection.fetchrow(
            _UPSERT,
            uuid.uuid4(),
            data.scope,
            data.subject_id,
            data.period,
            data.limit_usd,
            data.hard,
            _thresholds(data.alert_thresholds),
        )
        assert row is not None
        budget_id: uuid.UUID = row["id"]
        if row["created"]:
            # A budget created mid-period starts with what its period has already spent. Recording transactions
            # that began before this one would not see the new budget, so they are waited for (SHARE blocks new
            # usage rows until this commits: milliseconds, and only when a budget is created).
            await connection.execute("LOCK TABLE ai_usage_logs IN SHARE MODE")
            await connection.execute(_OPEN_WITH_SPEND, budget_id, now)
        alerts = [alert_from_row(alert) for alert in await connection.fetch(_ALERT_REACHED, budget_id, now)]
        budget = await _state(connection, now, budget_id)
    assert budget is not None
    logger.info(
        "budget %s %s: %s %s budget of USD %s (%s), thresholds %s",
        budget_id,
        "created" if row["created"] else "changed",
        _whose(data.scope, data.subject_id),
        data.period,
        format_money(data.limit_usd),
        "hard" if data.hard else "soft",
        budget.alert_thresholds,
    )
    for alert in alerts:
        log_new_alert(alert)
    return budget


async def delete_budget(db: Database, budget_id: uuid.UUID, *, now: datetime.datetime | None = None) -> Budget:
    """Delete a budget with its periods (its alerts stay); returns it as it stood. ``BudgetNotFoundError`` if none."""
    now = _now(now)
    async with db.transaction() as connection:
        row = await connection.fetchrow(_STATE + "WHERE b.id = $2 FOR UPDATE OF b", now, budget_id)
        if row is None:
            raise BudgetNotFoundError(budget_id)
        await connection.execute(_DELETE, budget_id)
    budget = _budget(row)
    logger.info(
        "budget %s deleted: %s %s budget of USD %s",
        budget_id,
        _whose(budget.scope, budget.subject_id),
        budget.period,
        format_money(budget.limit_usd),
    )
    return budget


async def list_budgets(db: Database, data: ListBudgetsInput, *, now: datetime.datetime | None = None) -> BudgetList:
    """Every budget (of ``data.scope``, of ``data.subject_id``, when given) with its current period's figures."""
    conditions: list[str] = []
    arguments: list[object] = [_now(now)]
    if data.scope is not None:
        arguments.append(data.scope)
        conditions.append(f"b.scope = ${len(arguments)}")
    if data.subject_id is not None:
        arguments.append(data.subject_id)
        conditions.append(f"b.subject_id = ${len(arguments)}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await db.fetch(_STATE + where + _ORDER, *arguments)
    return BudgetList(budgets=[_budget(row) for row in rows])


async def get_budget_status(db: Database, user_id: uuid.UUID, *, now: datetime.datetime | None = None) -> BudgetList:
    """The budgets that apply to ``user_id``'s calls: global ones, the user's own, and those of their conversations."""
    rows = await db.fetch(_STATE + _APPLYING_TO_USER + _ORDER, _now(now), user_id)
    return BudgetList(budgets=[_budget(row) for row in rows])


async def list_alerts(db: Database, data: ListAlertsInput) -> AlertList:
    """Alerts newest first, ``data.limit`` a page, after ``data.cursor`` when given."""
    if data.cursor is None:
        rows = await db.fetch(_ALERTS, data.limit + 1)
    else:
        after = decode_cursor(data.cursor)
        rows = await db.fetch(_ALERTS_AFTER, data.limit + 1, after.at, after.id)
    page = rows[: data.limit]
    next_cursor = (
        encode_cursor(Position(at=page[-1]["created_at"], id=page[-1]["id"])) if len(rows) > data.limit else None
    )
    return AlertList(alerts=[alert_record_from_row(row) for row in page], next_cursor=next_cursor)
