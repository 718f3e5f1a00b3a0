"""Indexes for the admin and conversation reads, a 15-minute usage rollup, and SQL views for dashboards.

Hand-written SQL: Piccolo's table definitions cannot express composite, descending or partial indexes, triggers or
views. Everything is reversed in ``backwards``.

``ai_usage_rollup`` holds, per 15-minute period (UTC-aligned), procedure, provider and reported model, the sums over
``ai_usage_logs``. Triggers keep it exact in the transaction that inserts, updates (a reprice),
deletes (retention) or truncates usage rows, so a replayed or late row counts in its own period. Admin reads over a
window take whole periods from the rollup and only the partial periods at the edges from the rows: a 30-day report
reads tens of thousands of rollup rows instead of hundreds of thousands of usage rows. Fifteen minutes because every
UTC offset in use since 1972 is a multiple of it, so a period never straddles a local day in any time zone.

A period's sums may be split over several rows (``stripe``): a writer adds to the first row of its key that no other
transaction holds (``FOR UPDATE SKIP LOCKED``) and only opens a row of its own (stripe = its backend pid) when all are
held. Concurrent calls of one model and procedure therefore never queue on one row lock until commit, and a key has
as many rows as the peak number of writers that overlapped on it, usually one. Readers sum over stripes.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-22T00:21:45:532702"
VERSION = "1.38.0"
DESCRIPTION = "Admin read indexes, usage rollup and dashboard views"

PERIOD = "date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
KEYS = ("period_start", "procedure", "provider", "model")
SUMS = (
    "calls",
    "error_calls",
    "cancelled_calls",
    "unpriced_calls",
    "estimated_calls",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
)
_KEY_TYPES = ("timestamptz", "varchar", "varchar", "varchar")
_SUM_TYPES = tuple("numeric" if column == "cost_usd" else "bigint" for column in SUMS)
_KEY_MATCH = " AND ".join(f"{key} = delta_{key}" for key in KEYS)


def _aggregate(rows: str, sign: str) -> str:
    """The rollup deltas that the usage rows of ``rows`` (a transition table) make, multiplied by ``sign``."""
    return f"""
        SELECT {PERIOD} AS period_start, procedure, provider, model,
               {sign} * count(*) AS calls,
               {sign} * count(*) FILTER (WHERE status = 'error') AS error_calls,
               {sign} * count(*) FILTER (WHERE status = 'cancelled') AS cancelled_calls,
               {sign} * count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_calls,
               {sign} * count(*) FILTER (WHERE usage_estimated) AS estimated_calls,
               {sign} * sum(input_tokens) AS input_tokens,
               {sign} * sum(cache_read_tokens) AS cache_read_tokens,
               {sign} * sum(cache_write_5m_tokens) AS cache_write_5m_tokens,
               {sign} * sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
               {sign} * sum(output_tokens) AS output_tokens,
               {sign} * sum(reasoning_tokens) AS reasoning_tokens,
               {sign} * coalesce(sum(estimated_cost_usd), 0) AS cost_usd
        FROM {rows}
        GROUP BY 1, 2, 3, 4"""


# Adds one key's deltas to a row of that key that no other transaction holds, or to this backend's own row.
_ADD = f"""
CREATE FUNCTION ai_usage_rollup_add({", ".join(f"delta_{c} {t}" for c, t in zip(KEYS + SUMS, _KEY_TYPES + _SUM_TYPES, strict=True))})
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    free_stripe integer;
BEGIN
    SELECT stripe INTO free_stripe FROM ai_usage_rollup
    WHERE {_KEY_MATCH}
    ORDER BY stripe LIMIT 1
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        UPDATE ai_usage_rollup SET {", ".join(f"{s} = {s} + delta_{s}" for s in SUMS)}
        WHERE {_KEY_MATCH} AND stripe = free_stripe;
    ELSE
        INSERT INTO ai_usage_rollup AS r ({", ".join(KEYS)}, stripe, {", ".join(SUMS)})
        VALUES ({", ".join(f"delta_{k}" for k in KEYS)}, pg_backend_pid(), {", ".join(f"delta_{s}" for s in SUMS)})
        ON CONFLICT ({", ".join(KEYS)}, stripe) DO UPDATE SET {", ".join(f"{s} = r.{s} + excluded.{s}" for s in SUMS)};
    END IF;
END
$$
"""


def _trigger_function(name: str, deltas: str) -> str:
    """A statement-level trigger function applying ``deltas`` key by key, in key order (so that two bulk writers
    take rollup rows in the same order). Rows left at zero stay: deleting them raced with concurrent inserts (a
    delete re-checked only the key, not the sums, after waiting on a row another transaction had just added to)."""
    keys = ", ".join(KEYS)
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        delta record;
    BEGIN
        FOR delta IN
            SELECT {keys}, {", ".join(f"sum({s})::{t} AS {s}" for s, t in zip(SUMS, _SUM_TYPES, strict=True))}
            FROM ({deltas}) AS d
            GROUP BY {keys}
            ORDER BY {keys}
        LOOP
            PERFORM ai_usage_rollup_add({", ".join(f"delta.{c}" for c in KEYS + SUMS)});
        END LOOP;
        RETURN NULL;
    END
    $$
    """


# Inserts are row-level: the recorder inserts one row per statement, and a row trigger skips the transition table
# and the aggregation a statement trigger needs (about half the cost on the hot path). Updates (reprices) and deletes
# (retention) touch many rows at once, so they are statement-level.
_INSERT_ROW = f"""
CREATE FUNCTION ai_usage_rollup_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ai_usage_rollup_add(
        {PERIOD.replace("created_at", "NEW.created_at")}, NEW.procedure, NEW.provider, NEW.model,
        1, (NEW.status = 'error')::int, (NEW.status = 'cancelled')::int, (NEW.pricing_status = 'unpriced')::int,
        NEW.usage_estimated::int, NEW.input_tokens, NEW.cache_read_tokens, NEW.cache_write_5m_tokens,
        NEW.cache_write_1h_tokens, NEW.output_tokens, NEW.reasoning_tokens, coalesce(NEW.estimated_cost_usd, 0));
    RETURN NULL;
END
$$
"""

_SUM_COLUMNS = ",\n".join(
    f"        {column} {'numeric(38, 18)' if column == 'cost_usd' else 'bigint'} NOT NULL DEFAULT 0" for column in SUMS
)

FORWARDS = (
    # admin.getConversationCost: a conversation's rows newest first, and its cost by procedure.
    "CREATE INDEX ai_usage_logs_conversation_created ON ai_usage_logs (conversation_id, created_at DESC, id DESC)",
    # admin.unpricedCalls: unpriced rows are few; a partial index finds them without touching the rest.
    "CREATE INDEX ai_usage_logs_unpriced_created ON ai_usage_logs (created_at DESC, id DESC) "
    "WHERE pricing_status = 'unpriced'",
    # chat.listConversations: the owner's conversations by latest activity, paged by (updated_at, id).
    "CREATE INDEX conversations_owner_activity ON conversations (owner, updated_at DESC, id DESC)",
    # admin.topConversationsByCost without a window: the first N entries of this index.
    "CREATE INDEX conversations_total_cost ON conversations (total_cost_usd DESC, id)",
    # chat.getConversation: the latest messages of a conversation, paged by (created_at, id).
    "CREATE INDEX messages_conversation_created ON messages (conversation, created_at DESC, id DESC)",
    f"""
    CREATE TABLE ai_usage_rollup (
        period_start timestamptz NOT NULL,
        procedure varchar(100) NOT NULL,
        provider varchar(32) NOT NULL,
        model varchar(200) NOT NULL,
        stripe integer NOT NULL DEFAULT 0,
{_SUM_COLUMNS},
        PRIMARY KEY (period_start, procedure, provider, model, stripe)
    )
    """,
    "COMMENT ON TABLE ai_usage_rollup IS 'Sums over ai_usage_logs per 15-minute period (UTC-aligned), procedure, "
    "provider and reported model, possibly split over several stripes: always sum over stripes. Kept exact by "
    "triggers on ai_usage_logs. cost_usd counts priced calls only.'",
    # No usage row may be written between the backfill and the triggers (another instance still running): it would
    # be missing from the rollup. The lock lasts until the migration's transaction commits, triggers in place.
    "LOCK TABLE ai_usage_logs IN SHARE ROW EXCLUSIVE MODE",
    f"INSERT INTO ai_usage_rollup ({', '.join(KEYS)}, {', '.join(SUMS)}) {_aggregate('ai_usage_logs', '1')}",
    _ADD,
    _INSERT_ROW,
    _trigger_function(
        "ai_usage_rollup_on_update",
        f"{_aggregate('updated_rows', '1')} UNION ALL {_aggregate('previous_rows', '-1')}",
    ),
    _trigger_function("ai_usage_rollup_on_delete", _aggregate("deleted_rows", "-1")),
    """
    CREATE FUNCTION ai_usage_rollup_on_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        TRUNCATE ai_usage_rollup;
        RETURN NULL;
    END
    $$
    """,
    "CREATE TRIGGER ai_usage_rollup_insert AFTER INSERT ON ai_usage_logs "
    "FOR EACH ROW EXECUTE FUNCTION ai_usage_rollup_on_insert()",
    "CREATE TRIGGER ai_usage_rollup_update AFTER UPDATE ON ai_usage_logs "
    "REFERENCING OLD TABLE AS previous_rows NEW TABLE AS updated_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION ai_usage_rollup_on_update()",
    "CREATE TRIGGER ai_usage_rollup_delete AFTER DELETE ON ai_usage_logs REFERENCING OLD TABLE AS deleted_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION ai_usage_rollup_on_delete()",
    "CREATE TRIGGER ai_usage_rollup_truncate AFTER TRUNCATE ON ai_usage_logs "
    "FOR EACH STATEMENT EXECUTE FUNCTION ai_usage_rollup_on_truncate()",
    # Dashboards: days are UTC days. Sums of counts are cast back to bigint (sum(bigint) is an unscaled numeric).
    """
    CREATE VIEW usage_daily_by_procedure AS
    SELECT (period_start AT TIME ZONE 'UTC')::date AS day, procedure,
           sum(calls)::bigint AS calls, sum(error_calls)::bigint AS error_calls,
           sum(cancelled_calls)::bigint AS cancelled_calls, sum(unpriced_calls)::bigint AS unpriced_calls,
           sum(input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens)::bigint
               AS prompt_tokens,
           sum(output_tokens)::bigint AS output_tokens,
           sum(cost_usd)::numeric(38, 18) AS cost_usd
    FROM ai_usage_rollup
    GROUP BY 1, 2
    """,
    """
    CREATE VIEW usage_by_model AS
    SELECT model, provider,
           sum(calls)::bigint AS calls, sum(error_calls)::bigint AS error_calls,
           sum(cancelled_calls)::bigint AS cancelled_calls, sum(unpriced_calls)::bigint AS unpriced_calls,
           sum(input_tokens)::bigint AS input_tokens, sum(cache_read_tokens)::bigint AS cache_read_tokens,
           sum(cache_write_5m_tokens)::bigint AS cache_write_5m_tokens,
           sum(cache_write_1h_tokens)::bigint AS cache_write_1h_tokens,
           sum(output_tokens)::bigint AS output_tokens, sum(reasoning_tokens)::bigint AS reasoning_tokens,
           sum(cost_usd)::numeric(38, 18) AS cost_usd,
           min(period_start) AS first_period_start, max(period_start) AS last_period_start
    FROM ai_usage_rollup
    GROUP BY 1, 2
    """,
    """
    CREATE VIEW usage_daily_calls AS
    SELECT (period_start AT TIME ZONE 'UTC')::date AS day,
           sum(calls)::bigint AS calls, sum(calls - error_calls - cancelled_calls)::bigint AS ok_calls,
           sum(error_calls)::bigint AS error_calls, sum(cancelled_calls)::bigint AS cancelled_calls,
           sum(unpriced_calls)::bigint AS unpriced_calls, sum(estimated_calls)::bigint AS estimated_calls
    FROM ai_usage_rollup
    GROUP BY 1
    """,
    "COMMENT ON VIEW usage_daily_by_procedure IS "
    "'Calls, tokens and cost (priced calls only; see unpriced_calls) per UTC day and procedure'",
    "COMMENT ON VIEW usage_by_model IS "
    "'Calls, tokens and cost (priced calls only; see unpriced_calls) per reported model, all time'",
    "COMMENT ON VIEW usage_daily_calls IS 'Calls per UTC day by outcome'",
)

BACKWARDS = (
    "DROP VIEW IF EXISTS usage_daily_calls",
    "DROP VIEW IF EXISTS usage_by_model",
    "DROP VIEW IF EXISTS usage_daily_by_procedure",
    "DROP TRIGGER IF EXISTS ai_usage_rollup_truncate ON ai_usage_logs",
    "DROP TRIGGER IF EXISTS ai_usage_rollup_delete ON ai_usage_logs",
    "DROP TRIGGER IF EXISTS ai_usage_rollup_update ON ai_usage_logs",
    "DROP TRIGGER IF EXISTS ai_usage_rollup_insert ON ai_usage_logs",
    "DROP FUNCTION IF EXISTS ai_usage_rollup_on_truncate()",
    "DROP FUNCTION IF EXISTS ai_usage_rollup_on_delete()",
    "DROP FUNCTION IF EXISTS ai_usage_rollup_on_update()",
    "DROP FUNCTION IF EXISTS ai_usage_rollup_on_insert()",
    f"DROP FUNCTION IF EXISTS ai_usage_rollup_add({', '.join(_KEY_TYPES + _SUM_TYPES)})",
    "DROP TABLE IF EXISTS ai_usage_rollup",
    "DROP INDEX IF EXISTS messages_conversation_created",
    "DROP INDEX IF EXISTS conversations_total_cost",
    "DROP INDEX IF EXISTS conversations_owner_activity",
    "DROP INDEX IF EXISTS ai_usage_logs_unpriced_created",
    "DROP INDEX IF EXISTS ai_usage_logs_conversation_created",
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
