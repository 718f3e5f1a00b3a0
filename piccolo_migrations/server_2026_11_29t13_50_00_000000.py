"""Budgets, their periods and their alerts.

Hand-written SQL: Piccolo's table definitions cannot express the expression index that makes a global budget unique,
the checks, or the period function. Everything is reversed in ``backwards``.

A budget's spend is kept per period in ``budget_periods``, keyed by the period's UTC start (``budget_period_start``),
so a new day, week or month is simply a new row: nothing needs a reset job. ``reserved_usd`` holds the worst-case
cost of the calls admitted and not yet settled; ``spent_usd`` what settled calls actually cost. An alert is written
in the transaction of the spend that crossed its threshold, once per budget, period and threshold (the unique index).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T13:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Budgets, budget periods and alerts"

NO_SUBJECT = "'00000000-0000-0000-0000-000000000000'::uuid"

FORWARDS = (
    """
    CREATE FUNCTION budget_period_start(period text, at timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
        SELECT CASE period
            WHEN 'day' THEN date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            WHEN 'week' THEN date_trunc('week', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            WHEN 'month' THEN date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            ELSE TIMESTAMPTZ '1970-01-01 00:00:00+00'
        END
    $$
    """,
    """
    CREATE TABLE budgets (
        id uuid PRIMARY KEY,
        scope varchar(16) NOT NULL CHECK (scope IN ('global', 'user', 'conversation')),
        subject_id uuid,
        period varchar(8) NOT NULL CHECK (period IN ('day', 'week', 'month', 'total')),
        limit_usd numeric(38, 18) NOT NULL CHECK (limit_usd >= 0),
        hard boolean NOT NULL,
        alert_thresholds numeric[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CHECK ((scope = 'global') = (subject_id IS NULL))
    )
    """,
    f"CREATE UNIQUE INDEX budgets_key ON budgets (scope, coalesce(subject_id, {NO_SUBJECT}), period)",
    """
    CREATE TABLE budget_periods (
        budget_id uuid NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
        period_start timestamptz NOT NULL,
        spent_usd numeric(38, 18) NOT NULL DEFAULT 0,
        reserved_usd numeric(38, 18) NOT NULL DEFAULT 0,
        PRIMARY KEY (budget_id, period_start)
    )
    """,
    """
    CREATE TABLE budget_alerts (
        id uuid PRIMARY KEY,
        kind varchar(16) NOT NULL CHECK (kind IN ('threshold', 'spike')),
        budget_id uuid,
        scope varchar(16),
        subject_id uuid,
        period varchar(8),
        period_start timestamptz NOT NULL,
        threshold numeric(38, 18),
        limit_usd numeric(38, 18),
        spent_usd numeric(38, 18) NOT NULL,
        baseline_usd numeric(38, 18),
        created_at timestamptz NOT NULL DEFAULT now(),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz,
        last_error text
    )
    """,
    f"""
    CREATE UNIQUE INDEX budget_alerts_once ON budget_alerts
        (kind, coalesce(budget_id, {NO_SUBJECT}), period_start, coalesce(threshold, 0))
    """,
    "CREATE INDEX budget_alerts_created ON budget_alerts (created_at DESC, id DESC)",
    "CREATE INDEX budget_alerts_undelivered ON budget_alerts (next_attempt_at) WHERE delivered_at IS NULL",
)

BACKWARDS = (
    "DROP TABLE IF EXISTS budget_alerts",
    "DROP TABLE IF EXISTS budget_periods",
    "DROP TABLE IF EXISTS budgets",
    "DROP FUNCTION IF EXISTS budget_period_start(text, timestamptz)",
)


async def _run_all(statements: tuple[str, ...]) -> None:
    """Run in the migration's own transaction (``run_ddl`` joins it), so a failure leaves nothing half done."""
    engine = engine_finder()
    assert engine is not None
    for statement in statements:
        await engine.run_ddl(statement)


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="server", description=DESCRIPTION)

    async def run_forwards() -> None:
        await _run_all(FORWARDS)

    async def run_backwards() -> None:
        await _run_all(BACKWARDS)

    manager.add_raw(run_forwards)
    manager.add_raw_backwards(run_backwards)
    return manager
