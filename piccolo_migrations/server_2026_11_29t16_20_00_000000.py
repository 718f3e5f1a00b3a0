"""Repricing: a run per ``python -m server reprice`` and an adjustment per usage row whose cost it changed.

Hand-written SQL like the other Wave 2 migrations. A reprice never edits history silently: every usage row it
changes gets a ``usage_cost_adjustments`` row (its old and new cost, pricing status, price source and tier, and the
rate and cost of each bucket as JSON, so that a bucket added later needs no new column), written in the batch
transaction that changes the row, the conversation totals, the rollup (by its triggers) and the budget spend.

``reprice_runs`` holds the run's filters, figures and keyset cursor (``cursor_created_at``, ``cursor_id``: the last
usage row its committed batches have passed), so a run that stopped is resumed where it was (``--resume RUN_ID``).
Dry runs are kept too (``dry_run``), with the figures they previewed.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T16:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Reprice runs and usage cost adjustments"

FORWARDS = (
    """
    CREATE TABLE reprice_runs (
        id uuid PRIMARY KEY,
        status varchar(16) NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
        dry_run boolean NOT NULL,
        reason text NOT NULL DEFAULT '',
        since timestamptz,
        until timestamptz,
        models text[] NOT NULL DEFAULT '{}',
        batch_size integer NOT NULL,
        price_file text,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        matched_calls bigint NOT NULL DEFAULT 0,
        scanned_calls bigint NOT NULL DEFAULT 0,
        changed_calls bigint NOT NULL DEFAULT 0,
        newly_priced_calls bigint NOT NULL DEFAULT 0,
        skipped_calls bigint NOT NULL DEFAULT 0,
        delta_usd numeric(38, 18) NOT NULL DEFAULT 0,
        by_model jsonb NOT NULL DEFAULT '{}',
        cursor_created_at timestamptz,
        cursor_id uuid,
        error text
    )
    """,
    "CREATE INDEX reprice_runs_started ON reprice_runs (started_at DESC, id DESC)",
    """
    CREATE TABLE usage_cost_adjustments (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id uuid NOT NULL REFERENCES reprice_runs (id),
        usage_id uuid NOT NULL,
        call_id uuid NOT NULL,
        conversation_id uuid,
        model varchar(200) NOT NULL,
        call_created_at timestamptz NOT NULL,
        old_cost_usd numeric(38, 18),
        new_cost_usd numeric(38, 18),
        delta_usd numeric(38, 18) NOT NULL,
        old_pricing_status varchar(16) NOT NULL,
        new_pricing_status varchar(16) NOT NULL,
        old_price_source varchar(200),
        new_price_source varchar(200),
        old_price_tier varchar(100),
        new_price_tier varchar(100),
        old_buckets jsonb NOT NULL,
        new_buckets jsonb NOT NULL,
        reason text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX usage_cost_adjustments_run ON usage_cost_adjustments (run_id)",
    "CREATE INDEX usage_cost_adjustments_call ON usage_cost_adjustments (call_id)",
    "COMMENT ON TABLE usage_cost_adjustments IS 'One row per usage row a reprice run changed: old and new cost "
    "(NULL: unpriced), status, price source and tier; old_buckets/new_buckets map each bucket to its rate (USD per "
    "1M tokens) and cost (USD) as decimal strings'",
)

BACKWARDS = (
    "DROP TABLE IF EXISTS usage_cost_adjustments",
    "DROP TABLE IF EXISTS reprice_runs",
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
