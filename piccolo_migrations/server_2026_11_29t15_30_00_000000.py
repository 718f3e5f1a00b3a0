"""Cache statistics (``admin.cacheStats``) and the views a dashboard reads for the response cache and idempotency.

Hand-written SQL like the response cache's migration.

- ``response_cache_daily``: entries created (new keys; a ``refresh`` of a live key replaces it and is counted apart)
  and entries expired (pruned) per UTC day and procedure, kept by statement-level triggers on ``response_cache``
  (one upsert per statement, from its transition table), because pruned entries leave no row to count afterwards.
- ``idempotent_replay_counts``: requests answered by replaying an idempotency key's stored answer, per UTC day and
  procedure (``IdempotencyKeys.replayed``: one statement on the replay path only). Replays write no usage row.
- ``ai_usage_logs_cache_lookups``: a partial index over the usage rows of cache lookups only (hits, and the provider
  calls of misses and refreshes, labelled ``metadata.cache``), so the statistics never scan the other calls, and a
  call without a cache costs nothing more on insert than the predicate's evaluation.
- Views: ``response_cache_growth_daily``, ``idempotent_replays_daily``, ``cache_hit_ratio_daily``.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T15:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Cache statistics and dashboard views"

CACHE_LOOKUP = "(status = 'cache_hit' OR metadata ? 'cache')"

FORWARDS = (
    """
    CREATE TABLE response_cache_daily (
        day date NOT NULL,
        procedure varchar(100) NOT NULL,
        entries_created bigint NOT NULL DEFAULT 0,
        entries_replaced bigint NOT NULL DEFAULT 0,
        entries_expired bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (day, procedure)
    )
    """,
    """
    CREATE FUNCTION response_cache_daily_created() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO response_cache_daily AS d (day, procedure, entries_created)
        SELECT (created_at AT TIME ZONE 'UTC')::date, procedure, count(*) FROM new_rows GROUP BY 1, 2
        ON CONFLICT (day, procedure) DO UPDATE SET entries_created = d.entries_created + excluded.entries_created;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION response_cache_daily_replaced() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO response_cache_daily AS d (day, procedure, entries_replaced)
        SELECT (created_at AT TIME ZONE 'UTC')::date, procedure, count(*) FROM new_rows GROUP BY 1, 2
        ON CONFLICT (day, procedure) DO UPDATE SET entries_replaced = d.entries_replaced + excluded.entries_replaced;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION response_cache_daily_expired() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO response_cache_daily AS d (day, procedure, entries_expired)
        SELECT (expires_at AT TIME ZONE 'UTC')::date, procedure, count(*) FROM old_rows GROUP BY 1, 2
        ON CONFLICT (day, procedure) DO UPDATE SET entries_expired = d.entries_expired + excluded.entries_expired;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER response_cache_daily_created AFTER INSERT ON response_cache
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION response_cache_daily_created()
    """,
    """
    CREATE TRIGGER response_cache_daily_replaced AFTER UPDATE ON response_cache
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION response_cache_daily_replaced()
    """,
    """
    CREATE TRIGGER response_cache_daily_expired AFTER DELETE ON response_cache
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION response_cache_daily_expired()
    """,
    """
    CREATE TABLE idempotent_replay_counts (
        day date NOT NULL,
        procedure varchar(100) NOT NULL,
        replays bigint NOT NULL,
        PRIMARY KEY (day, procedure)
    )
    """,
    f"CREATE INDEX ai_usage_logs_cache_lookups ON ai_usage_logs (created_at) WHERE {CACHE_LOOKUP}",
    """
    CREATE VIEW response_cache_growth_daily AS
    SELECT day, procedure, entries_created, entries_replaced, entries_expired,
           entries_created - entries_expired AS net_growth
    FROM response_cache_daily
    """,
    """
    CREATE VIEW idempotent_replays_daily AS
    SELECT day, procedure, replays FROM idempotent_replay_counts
    """,
    f"""
    CREATE VIEW cache_hit_ratio_daily AS
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, procedure,
           count(*) FILTER (WHERE status = 'cache_hit') AS hits,
           count(*) FILTER (WHERE status <> 'cache_hit' AND metadata ->> 'cache' = 'miss') AS misses,
           count(*) FILTER (WHERE status = 'cache_hit')::float8
               / nullif(count(*) FILTER (WHERE status = 'cache_hit' OR metadata ->> 'cache' = 'miss'), 0)
               AS hit_ratio,
           CASE WHEN count(*) FILTER (WHERE status = 'cache_hit') > 0
                 AND count(saved_usd) FILTER (WHERE status = 'cache_hit') = 0 THEN NULL
                ELSE coalesce(sum(saved_usd) FILTER (WHERE status = 'cache_hit'), 0) END::numeric(38, 18) AS saved_usd
    FROM ai_usage_logs
    WHERE {CACHE_LOOKUP}
    GROUP BY 1, 2
    """,
)

BACKWARDS = (
    "DROP VIEW IF EXISTS cache_hit_ratio_daily",
    "DROP VIEW IF EXISTS idempotent_replays_daily",
    "DROP VIEW IF EXISTS response_cache_growth_daily",
    "DROP INDEX IF EXISTS ai_usage_logs_cache_lookups",
    "DROP TABLE IF EXISTS idempotent_replay_counts",
    "DROP TRIGGER IF EXISTS response_cache_daily_expired ON response_cache",
    "DROP TRIGGER IF EXISTS response_cache_daily_replaced ON response_cache",
    "DROP TRIGGER IF EXISTS response_cache_daily_created ON response_cache",
    "DROP FUNCTION IF EXISTS response_cache_daily_expired()",
    "DROP FUNCTION IF EXISTS response_cache_daily_replaced()",
    "DROP FUNCTION IF EXISTS response_cache_daily_created()",
    "DROP TABLE IF EXISTS response_cache_daily",
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
