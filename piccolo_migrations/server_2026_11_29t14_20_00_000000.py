"""Unpriced is not free in the dashboard views; per-model unpriced counts in conversations; indexes for the per-user
and failed-call reads.

Hand-written SQL, like the migration that created the views: Piccolo cannot express views, partial indexes or the
backfill. Everything is reversed in ``backwards``.

- ``usage_by_model`` and ``usage_daily_by_procedure`` showed ``cost_usd`` 0 for a group whose calls were all
  unpriced. It is now NULL there (unknown, not free); a group with any priced call still sums the priced ones.
  ``ai_usage_rollup.cost_usd`` itself keeps summing priced calls only: ``unpriced_calls`` beside it tells the two
  cases apart.
- A conversation's ``model_distribution`` entries gain ``unpriced`` (the model's unpriced calls), backfilled from
  ``ai_usage_logs``, so that a model whose calls were all unpriced shows a null cost rather than 0.
- ``chat.getMyUsage`` and ``admin.usageByUser`` with a ``userId`` read one user's rows in a window:
  ``(user_id, created_at)``. ``admin.failedCalls`` pages failed rows newest first: a partial index, as for unpriced
  rows (failed calls are few).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T14:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Null cost for all-unpriced groups in the views, per-model unpriced counts, per-user and failed indexes"

_COST = "sum(cost_usd)::numeric(38, 18) AS cost_usd"
_COST_UNLESS_ALL_UNPRICED = (
    "(CASE WHEN sum(calls) > 0 AND sum(unpriced_calls) = sum(calls) THEN NULL ELSE sum(cost_usd) END)::numeric(38, 18)"
    " AS cost_usd"
)


def _daily_by_procedure(cost: str) -> str:
    return f"""
    CREATE OR REPLACE VIEW usage_daily_by_procedure AS
    SELECT (period_start AT TIME ZONE 'UTC')::date AS day, procedure,
           sum(calls)::bigint AS calls, sum(error_calls)::bigint AS error_calls,
           sum(cancelled_calls)::bigint AS cancelled_calls, sum(unpriced_calls)::bigint AS unpriced_calls,
           sum(input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens)::bigint
               AS prompt_tokens,
           sum(output_tokens)::bigint AS output_tokens,
           {cost}
    FROM ai_usage_rollup
    GROUP BY 1, 2
    """


def _by_model(cost: str) -> str:
    return f"""
    CREATE OR REPLACE VIEW usage_by_model AS
    SELECT model, provider,
           sum(calls)::bigint AS calls, sum(error_calls)::bigint AS error_calls,
           sum(cancelled_calls)::bigint AS cancelled_calls, sum(unpriced_calls)::bigint AS unpriced_calls,
           sum(input_tokens)::bigint AS input_tokens, sum(cache_read_tokens)::bigint AS cache_read_tokens,
           sum(cache_write_5m_tokens)::bigint AS cache_write_5m_tokens,
           sum(cache_write_1h_tokens)::bigint AS cache_write_1h_tokens,
           sum(output_tokens)::bigint AS output_tokens, sum(reasoning_tokens)::bigint AS reasoning_tokens,
           {cost},
           min(period_start) AS first_period_start, max(period_start) AS last_period_start
    FROM ai_usage_rollup
    GROUP BY 1, 2
    """


FORWARDS = (
    _daily_by_procedure(_COST_UNLESS_ALL_UNPRICED),
    _by_model(_COST_UNLESS_ALL_UNPRICED),
    "COMMENT ON VIEW usage_daily_by_procedure IS 'Calls, tokens and cost per UTC day and procedure; cost_usd sums "
    "the priced calls (see unpriced_calls) and is NULL when every call was unpriced'",
    "COMMENT ON VIEW usage_by_model IS 'Calls, tokens and cost per reported model, all time; cost_usd sums the priced "
    "calls (see unpriced_calls) and is NULL when every call was unpriced'",
    # No usage row may be recorded between the backfill and the commit (another instance still running): its
    # conversation's unpriced count would be missing. The lock lasts until the migration's transaction commits.
    "LOCK TABLE ai_usage_logs IN SHARE ROW EXCLUSIVE MODE",
    """
    WITH unpriced AS (
        SELECT conversation_id, model, count(*) AS calls
        FROM ai_usage_logs
        WHERE conversation_id IS NOT NULL AND pricing_status = 'unpriced'
        GROUP BY conversation_id, model
    )
    UPDATE conversations c SET model_distribution = (
        SELECT jsonb_object_agg(d.key, d.value || jsonb_build_object('unpriced', coalesce(u.calls, 0)))
        FROM jsonb_each(c.model_distribution) AS d (key, value)
        LEFT JOIN unpriced u ON u.conversation_id = c.id AND u.model = d.key
    )
    WHERE c.model_distribution <> '{}'::jsonb
    """,
    "CREATE INDEX ai_usage_logs_user_created ON ai_usage_logs (user_id, created_at)",
    "CREATE INDEX ai_usage_logs_failed_created ON ai_usage_logs (created_at DESC, id DESC) "
    "WHERE status IN ('error', 'cancelled')",
)

BACKWARDS = (
    "DROP INDEX IF EXISTS ai_usage_logs_failed_created",
    "DROP INDEX IF EXISTS ai_usage_logs_user_created",
    """
    UPDATE conversations SET model_distribution = (
        SELECT jsonb_object_agg(key, value - 'unpriced') FROM jsonb_each(model_distribution)
    )
    WHERE model_distribution <> '{}'::jsonb
    """,
    _by_model(_COST),
    _daily_by_procedure(_COST),
    "COMMENT ON VIEW usage_daily_by_procedure IS "
    "'Calls, tokens and cost (priced calls only; see unpriced_calls) per UTC day and procedure'",
    "COMMENT ON VIEW usage_by_model IS "
    "'Calls, tokens and cost (priced calls only; see unpriced_calls) per reported model, all time'",
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
