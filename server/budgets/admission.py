"""Admitting a call under the hard budgets that apply to it: reserve its worst-case cost, or refuse it.

Budgets live in ``budgets``; their spend per period in ``budget_periods`` (``spent_usd`` of settled calls,
``reserved_usd`` of admitted ones still running), keyed by the period's UTC start, so a new period is a new row. A
call is admitted inside the ledger's claim transaction: the periods of every hard budget that applies are locked in
one fixed order (budget id), the worst case is checked against each limit, reserved, and the claim written with the
periods it reserved from, so concurrent calls cannot both take the last dollar. The recording transaction settles
the claim: it releases the reservation and adds the actual cost to every budget (hard or soft) that applies
(``server.llm.recorder``), writing an alert for each threshold the spend crosses.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from server.database import Connection
from server.errors import BudgetExceededError

__all__ = ("APPLICABLE_HARD_BUDGET", "COUNTED_SINCE_CREATION", "Reservation", "admit", "period_start")

APPLICABLE: Final = """(
    b.scope = 'global'
    OR (b.scope = 'user' AND b.subject_id = {user})
    OR (b.scope = 'conversation' AND b.subject_id = {conversation})
)"""
"""The budgets that apply to a call of ``{user}`` in ``{conversation}`` (SQL expressions), for a table aliased ``b``."""
COUNTED_SINCE_CREATION: Final = "budget_period_start(b.period, {at}) >= budget_period_start(b.period, b.created_at)"
"""Whether budget ``b`` counts a call made at ``{at}``: from the period it was created in (which it starts with what
its scope had already spent, ``server.budgets.service``); earlier periods are not its own. Reprices and
``check-totals`` hold spend to it."""
APPLICABLE_HARD_BUDGET: Final = (
    "SELECT 1 FROM budgets b WHERE b.hard AND "
    + APPLICABLE.format(user=":user_id", conversation=":budget_conversation_id")
    + " LIMIT 1"
)
"""Whether any hard budget applies (named parameters ``:user_id``, ``:budget_conversation_id``)."""

_OPEN_PERIODS: Final = f"""
INSERT INTO budget_periods (budget_id, period_start)
SELECT b.id, budget_period_start(b.period, $3) FROM budgets b
WHERE b.hard AND {APPLICABLE.format(user="$1", conversation="$2")}
ON CONFLICT (budget_id, period_start) DO NOTHING
"""
_LOCK_PERIODS: Final = f"""
SELECT b.id, b.scope, b.subject_id, b.period, b.limit_usd, p.period_start, p.spent_usd, p.reserved_usd
FROM budgets b
JOIN budget_periods p ON p.budget_id = b.id AND p.period_start = budget_period_start(b.period, $3)
WHERE b.hard AND {APPLICABLE.format(user="$1", conversation="$2")}
ORDER BY b.id
FOR UPDATE OF p
"""
_RESERVE: Final = """
UPDATE budget_periods p SET reserved_usd = p.reserved_usd + $3
FROM unnest($1::uuid[], $2::timestamptz[]) AS r(budget_id, period_start)
WHERE p.budget_id = r.budget_id AND p.period_start = r.period_start
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a claim reserved: ``amount_usd`` from each of the budget periods (same order)."""

    amount_usd: Decimal
    budget_ids: tuple[uuid.UUID, ...]
    period_starts: tuple[datetime.datetime, ...]


NO_RESERVATION: Final = Reservation(amount_usd=Decimal(0), budget_ids=(), period_starts=())


def period_start(period: str, at: datetime.datetime) -> datetime.datetime:
    """The UTC start of the ``period`` (day, week from Monday, month, total) holding ``at``, as the database has it."""
    at = at.astimezone(datetime.UTC)
    if period == "day":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - datetime.timedelta(days=day.weekday())
    if period == "month":
        return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def period_end(period: str, start: datetime.datetime) -> datetime.datetime | None:
    """When a period that began at ``start`` ends (when its budget resets); None for ``total``."""
    if period == "day":
        return start + datetime.timedelta(days=1)
    if period == "week":
        return start + datetime.timedelta(days=7)
    if period == "month":
        return (
            start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        )
    return None


async def admit(
    connection: Connection,
    *,
    user_id: uuid.UUID | None,
    conversation_id: uuid.UUID | None,
    worst_case_usd: Decimal | None,
    at: datetime.datetime,
) -> Reservation:
    """Reserve ``worst_case_usd`` from every hard budget that applies, inside the caller's transaction.

    ``worst_case_usd`` None means the model has no known price: under a hard budget that is refused, never taken as
    free. Raises ``BudgetExceededError`` naming the first budget (in id order) that cannot take the call.
    """
    await connection.execute(_OPEN_PERIODS, user_id, conversation_id, at)
    periods = await connection.fetch(_LOCK_PERIODS, user_id, conversation_id, at)
    if not periods:
        return NO_RESERVATION
    for row in periods:
        spent, reserved, limit = row["spent_usd"], row["reserved_usd"], row["limit_usd"]
        if worst_case_usd is None or spent + reserved + worst_case_usd > limit:
            raise BudgetExceededError(
                budget_id=row["id"],
                scope=row["scope"],
                subject_id=row["subject_id"],
                period=row["period"],
                limit_usd=limit,
                spent_usd=spent,
                reserved_usd=reserved,
                requested_usd=worst_case_usd,
                resets_at=period_end(row["period"], row["period_start"]),
            )
    assert worst_case_usd is not None
    budget_ids = tuple(row["id"] for row in periods)
    starts = tuple(row["period_start"] for row in periods)
    await connection.execute(_RESERVE, list(budget_ids), list(starts), worst_case_usd)
    return Reservation(amount_usd=worst_case_usd, budget_ids=budget_ids, period_starts=starts)
