"""Wire vocabulary of budgets: what may be capped (scope), over which period, and how hard; and their alerts.

A budget caps spend in USD over a UTC period: ``day``, ``week`` (from Monday), ``month`` or ``total``. The period is
part of the key, so a budget simply starts afresh when a new period begins. A ``hard`` budget refuses a call whose
worst-case cost would take it over its limit (PAYMENT_REQUIRED, the error's ``data.budget`` naming it); a soft one
only alerts. Alert thresholds are fractions of the limit (``0.8`` alerts at 80 %).

A budget is keyed by ``(scope, subjectId, period)``: ``admin.setBudget`` creates it or changes its terms, keeping
what the current period has spent (a new budget starts with what its scope already spent in the current period).
Every figure of a ``Budget`` is its current UTC period's: ``spentUsd`` by settled calls, ``reservedUsd`` by the
worst case of calls admitted and still running (hard budgets only), ``remainingUsd`` what is left of the limit after
both (never below 0). An alert (``kind`` ``threshold`` or ``spike``) is kept in the database,
listed by ``admin.listAlerts``, and posted to the webhook as a ``BudgetAlert``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.idempotency import FromIdempotentCache, IdempotencyKey
from schemas.money import Money
from schemas.registry import Access, mutation, query
from schemas.validation import Cursor, InvalidInput, decode_cursor

__all__ = (
    "ADMIN_BUDGET_PROCEDURES",
    "DEFAULT_ALERT_THRESHOLDS",
    "DELETE_BUDGET",
    "GET_BUDGET_STATUS",
    "LIST_ALERTS",
    "LIST_BUDGETS",
    "SET_BUDGET",
    "AlertKind",
    "AlertList",
    "AlertRecord",
    "AlertThreshold",
    "Budget",
    "BudgetAlert",
    "BudgetChange",
    "BudgetList",
    "BudgetPeriod",
    "BudgetScope",
    "DeleteBudgetInput",
    "ListAlertsInput",
    "ListBudgetsInput",
    "SetBudgetInput",
)

BudgetScope = Literal["global", "user", "conversation"]
"""``global``: all spend; ``user``: one user's calls (``subjectId`` the user); ``conversation``: one conversation's."""
BudgetPeriod = Literal["day", "week", "month", "total"]
"""UTC calendar periods; ``total`` never resets."""
AlertKind = Literal["threshold", "spike"]
"""``threshold``: a budget's spend reached a fraction of its limit; ``spike``: an hour's spend, all budgets aside, was
``ALERT_SPIKE_FACTOR`` times the trailing hourly average or more."""

AlertThreshold = Annotated[
    float, msgspec.Meta(gt=0, le=10, description="A fraction of the limit: 0.8 alerts when 80 % of it is spent.")
]
DEFAULT_ALERT_THRESHOLDS: Final = (0.5, 0.8, 1.0)
MAX_ALERT_THRESHOLDS: Final = 20
LIMIT_DIGITS: Final = 20
"""Digits before the decimal point a limit may have (the database holds NUMERIC(38, 18))."""
LIMIT_DECIMALS: Final = 18


def _check_subject(scope: BudgetScope | None, subject_id: uuid.UUID | None, *, required: bool) -> None:
    if scope == "global" and subject_id is not None:
        raise InvalidInput("subjectId", "`subjectId` must be absent for a global budget")
    if required and scope != "global" and subject_id is None:
        raise InvalidInput("subjectId", f"`subjectId` is required for a {scope} budget: the id of the {scope}")


def _check_limit(limit: Decimal) -> None:
    if not limit.is_finite() or limit < 0:
        raise InvalidInput("limitUsd", "`limitUsd` must be an amount of 0 or more")
    if limit >= 10**LIMIT_DIGITS:
        raise InvalidInput("limitUsd", f"`limitUsd` may have at most {LIMIT_DIGITS} digits before the decimal point")
    _, digits, exponent = limit.as_tuple()
    assert isinstance(exponent, int)  # finite
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if limit and exponent + trailing_zeros < -LIMIT_DECIMALS:
        raise InvalidInput("limitUsd", f"`limitUsd` may have at most {LIMIT_DECIMALS} decimal places")


# --- budgets ------------------------------------------------------------------------------------------------------


class SetBudgetInput(WireInput, frozen=True, kw_only=True):
    """The budget of ``(scope, subjectId, period)``, created or changed; a change keeps the current period's spend.

    ``subjectId`` is the user (``scope`` ``user``) or the conversation (``conversation``), and absent for ``global``.
    ``alertThresholds`` are kept sorted and without duplicates; an empty list means no threshold alerts.
    """

    scope: BudgetScope
    subject_id: uuid.UUID | None = None
    period: BudgetPeriod
    limit_usd: Annotated[Money, msgspec.Meta(description="The cap, USD, 0 or more (at most 18 decimal places).")]
    hard: Annotated[
        bool, msgspec.Meta(description="Refuse a call that could take the spend over the limit; false: alert only.")
    ] = True
    alert_thresholds: Annotated[
        list[AlertThreshold],
        msgspec.Meta(
            max_length=MAX_ALERT_THRESHOLDS,
            description="Fractions of the limit (above 0, at most 10) that alert once per period; default 0.5, 0.8, 1.",
        ),
    ] = msgspec.field(default_factory=lambda: list(DEFAULT_ALERT_THRESHOLDS))
    idempotency_key: IdempotencyKey | None = None

    def __post_init__(self) -> None:
        _check_subject(self.scope, self.subject_id, required=True)
        _check_limit(self.limit_usd)


class DeleteBudgetInput(WireInput, frozen=True, kw_only=True):
    """The budget goes with its spend per period; its alerts are kept."""

    budget_id: uuid.UUID
    idempotency_key: IdempotencyKey | None = None


class ListBudgetsInput(WireInput, frozen=True, kw_only=True):
    """Both filters are optional: ``scope`` narrows to one scope, ``subjectId`` to one user's or conversation's."""

    scope: BudgetScope | None = None
    subject_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        _check_subject(self.scope, self.subject_id, required=False)


class Budget(WireOutput, frozen=True, kw_only=True):
    """A budget and where its current UTC period stands; the figures are 0 until the period's first call."""

    budget_id: uuid.UUID
    scope: BudgetScope
    subject_id: uuid.UUID | None
    period: BudgetPeriod
    limit_usd: Money
    hard: bool
    alert_thresholds: list[AlertThreshold]
    period_start: Annotated[datetime, msgspec.Meta(description="When the current period began (UTC).")]
    resets_at: Annotated[
        datetime | None, msgspec.Meta(description="When the current period ends; null for a total budget.")
    ]
    spent_usd: Annotated[Money, msgspec.Meta(description="What the period's settled calls cost, USD.")]
    reserved_usd: Annotated[
        Money, msgspec.Meta(description="The worst-case cost of calls admitted and still running, USD.")
    ]
    remaining_usd: Annotated[Money, msgspec.Meta(description="limitUsd - spentUsd - reservedUsd, never below 0, USD.")]


class BudgetChange(Budget, frozen=True, kw_only=True):
    """A budget as ``admin.setBudget`` left it or ``admin.deleteBudget`` found it."""

    from_idempotent_cache: FromIdempotentCache = False


class BudgetList(WireOutput, frozen=True, kw_only=True):
    """Global budgets first, then user and conversation ones by subject; each subject's periods from day to total."""

    budgets: list[Budget]


# --- alerts -------------------------------------------------------------------------------------------------------


class ListAlertsInput(WireInput, frozen=True, kw_only=True):
    """``limit`` and ``cursor`` page the alerts, newest first."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        if self.cursor is not None:
            decode_cursor(self.cursor)


class BudgetAlert(WireOutput, frozen=True, kw_only=True):
    """What an alert says: the JSON body posted to ``ALERT_WEBHOOK_URL``, and the first fields of ``AlertRecord``.

    A ``threshold`` alert names its budget (``budgetId`` may since have been deleted) with the terms it had then:
    ``spentUsd`` (the period's spend, from ``periodStart``) reached ``threshold`` times ``limitUsd``. A ``spike``
    alert has no budget: ``spentUsd`` is the spend of the hour from ``periodStart``, and ``baselineUsd`` the trailing
    average spend per hour it exceeded ``ALERT_SPIKE_FACTOR`` times.
    """

    alert_id: uuid.UUID
    kind: AlertKind
    budget_id: uuid.UUID | None
    scope: BudgetScope | None
    subject_id: uuid.UUID | None
    period: BudgetPeriod | None
    period_start: datetime
    threshold: AlertThreshold | None
    limit_usd: Money | None
    spent_usd: Money
    baseline_usd: Money | None
    created_at: datetime
    summary: Annotated[str, msgspec.Meta(description="One line for people, e.g. in a chat channel.")]


class AlertRecord(BudgetAlert, frozen=True, kw_only=True):
    """An alert and its delivery to the webhook: ``deliveredAt`` once it answered 2xx; ``nextAttemptAt`` null when
    delivered or given up."""

    delivered_at: datetime | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None


class AlertList(WireOutput, frozen=True, kw_only=True):
    """Newest first; ``nextCursor`` is null on the last page."""

    alerts: list[AlertRecord]
    next_cursor: str | None


SET_BUDGET = mutation(
    "admin.setBudget",
    SetBudgetInput,
    BudgetChange,
    Access.ADMIN,
    "Create the budget of (scope, subjectId, period) or change its limit, hardness and thresholds; the current "
    "period's spend is kept.",
)
DELETE_BUDGET = mutation(
    "admin.deleteBudget",
    DeleteBudgetInput,
    BudgetChange,
    Access.ADMIN,
    "Delete a budget; returns it as it stood. Its alerts are kept.",
)
LIST_BUDGETS = query(
    "admin.listBudgets",
    ListBudgetsInput,
    BudgetList,
    Access.ADMIN,
    "Every budget, optionally of one scope or subject, with its current period's spend, reservations and remainder.",
)
LIST_ALERTS = query(
    "admin.listAlerts",
    ListAlertsInput,
    AlertList,
    Access.ADMIN,
    "Threshold and spike alerts, newest first (paged), with their delivery to the webhook.",
)
GET_BUDGET_STATUS = query(
    "chat.getBudgetStatus",
    None,
    BudgetList,
    Access.USER,
    "The budgets that apply to the caller's calls (global, the caller's own, their conversations'), with their "
    "current period's figures.",
)

ADMIN_BUDGET_PROCEDURES: Final = (SET_BUDGET, DELETE_BUDGET, LIST_BUDGETS, LIST_ALERTS)
