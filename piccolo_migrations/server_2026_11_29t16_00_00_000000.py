"""Generated image tokens: a disjoint usage bucket, its rate and cost, in the usage rows, the rollup and the views.

Hand-written SQL like the rollup's migration, which this one extends; everything is reversed in ``backwards``.

- ``ai_usage_logs`` gains ``output_image_tokens`` (generated image tokens, billed at the image-output rate; disjoint
  from ``output_tokens``), ``rate_output_image`` and ``cost_output_image``. Earlier rows had no image tokens: their
  count is 0 (the column default, no rewrite), their image rate and cost NULL (reads show a cost of 0).
- ``ai_usage_rollup`` gains ``output_image_tokens``; ``ai_usage_rollup_add`` takes it (a new signature, so the old
  function is dropped) and the trigger functions pass it. Earlier periods sum to 0, which is right.
- ``usage_by_model`` and ``usage_daily_by_procedure`` gain ``output_image_tokens`` as their last column.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T16:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Generated image tokens: usage bucket, rate, cost, rollup and views"

PERIOD = "date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
KEYS = ("period_start", "procedure", "provider", "model")
_KEY_TYPES = ("timestamptz", "varchar", "varchar", "varchar")
_BEFORE = (
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
_AFTER = (*_BEFORE[:-1], "output_image_tokens", "cost_usd")
_KEY_MATCH = " AND ".join(f"{key} = delta_{key}" for key in KEYS)
_COST_UNLESS_ALL_UNPRICED = (
    "(CASE WHEN sum(calls) > 0 AND sum(unpriced_calls) = sum(calls) THEN NULL ELSE sum(cost_usd) END)::numeric(38, 18)"
    " AS cost_usd"
)


def _sum_types(sums: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("numeric" if column == "cost_usd" else "bigint" for column in sums)


def _aggregate(rows: str, sign: str, sums: tuple[str, ...]) -> str:
    image = f"{sign} * sum(output_image_tokens) AS output_image_tokens," if "output_image_tokens" in sums else ""
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
               {image}
               {sign} * coalesce(sum(estimated_cost_usd), 0) AS cost_usd
        FROM {rows}
        GROUP BY 1, 2, 3, 4"""


def _add(sums: tuple[str, ...]) -> str:
    arguments = ", ".join(
        f"delta_{c} {t}" for c, t in zip(KEYS + sums, _KEY_TYPES + _sum_types(sums), strict=True)
    )
    return f"""
CREATE FUNCTION ai_usage_rollup_add({arguments})
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    free_stripe integer;
BEGIN
    SELECT stripe INTO free_stripe FROM ai_usage_rollup
    WHERE {_KEY_MATCH}
    ORDER BY stripe LIMIT 1
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        UPDATE ai_usage_rollup SET {", ".join(f"{s} = {s} + delta_{s}" for s in sums)}
        WHERE {_KEY_MATCH} AND stripe = free_stripe;
    ELSE
        INSERT INTO ai_usage_rollup AS r ({", ".join(KEYS)}, stripe, {", ".join(sums)})
        VALUES ({", ".join(f"delta_{k}" for k in KEYS)}, pg_backend_pid(), {", ".join(f"delta_{s}" for s in sums)})
        ON CONFLICT ({", ".join(KEYS)}, stripe) DO UPDATE SET {", ".join(f"{s} = r.{s} + excluded.{s}" for s in sums)};
    END IF;
END
$$
"""


def _trigger_function(name: str, deltas: str, sums: tuple[str, ...]) -> str:
    keys = ", ".join(KEYS)
    return f"""
    CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        delta record;
    BEGIN
        FOR delta IN
            SELECT {keys}, {", ".join(f"sum({s})::{t} AS {s}" for s, t in zip(sums, _sum_types(sums), strict=True))}
            FROM ({deltas}) AS d
            GROUP BY {keys}
            ORDER BY {keys}
        LOOP
            PERFORM ai_usage_rollup_add({", ".join(f"delta.{c}" for c in KEYS + sums)});
        END LOOP;
        RETURN NULL;
    END
    $$
    """


def _insert_row(sums: tuple[str, ...]) -> str:
    image = " NEW.output_image_tokens," if "output_image_tokens" in sums else ""
    return f"""
CREATE OR REPLACE FUNCTION ai_usage_rollup_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ai_usage_rollup_add(
        {PERIOD.replace("created_at", "NEW.created_at")}, NEW.procedure, NEW.provider, NEW.model,
        1, (NEW.status = 'error')::int, (NEW.status = 'cancelled')::int, (NEW.pricing_status = 'unpriced')::int,
        NEW.usage_estimated::int, NEW.input_tokens, NEW.cache_read_tokens, NEW.cache_write_5m_tokens,
        NEW.cache_write_1h_tokens, NEW.output_tokens, NEW.reasoning_tokens,{image} coalesce(NEW.estimated_cost_usd, 0));
    RETURN NULL;
END
$$
"""


def _functions(sums: tuple[str, ...]) -> tuple[str, ...]:
    return (
        _add(sums),
        _insert_row(sums),
        _trigger_function(
            "ai_usage_rollup_on_update",
            f"{_aggregate('updated_rows', '1', sums)} UNION ALL {_aggregate('previous_rows', '-1', sums)}",
            sums,
        ),
        _trigger_function("ai_usage_rollup_on_delete", _aggregate("deleted_rows", "-1", sums), sums),
    )


def _drop_add(sums: tuple[str, ...]) -> str:
    return f"DROP FUNCTION ai_usage_rollup_add({', '.join(_KEY_TYPES + _sum_types(sums))})"


def _daily_by_procedure(image: bool) -> str:
    return f"""
    CREATE OR REPLACE VIEW usage_daily_by_procedure AS
    SELECT (period_start AT TIME ZONE 'UTC')::date AS day, procedure,
           sum(calls)::bigint AS calls, sum(error_calls)::bigint AS error_calls,
           sum(cancelled_calls)::bigint AS cancelled_calls, sum(unpriced_calls)::bigint AS unpriced_calls,
           sum(input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens)::bigint
               AS prompt_tokens,
           sum(output_tokens)::bigint AS output_tokens,
           {_COST_UNLESS_ALL_UNPRICED}{", sum(output_image_tokens)::bigint AS output_image_tokens" if image else ""}
    FROM ai_usage_rollup
    GROUP BY 1, 2
    """


def _by_model(image: bool) -> str:
    return f"""
    CREATE OR REPLACE VIEW usage_by_model AS
    SELECT model, provider,
           sum(calls)::bigint AS calls, sum(error_calls)::bigint AS error_calls,
           sum(cancelled_calls)::bigint AS cancelled_calls, sum(unpriced_calls)::bigint AS unpriced_calls,
           sum(input_tokens)::bigint AS input_tokens, sum(cache_read_tokens)::bigint AS cache_read_tokens,
           sum(cache_write_5m_tokens)::bigint AS cache_write_5m_tokens,
           sum(cache_write_1h_tokens)::bigint AS cache_write_1h_tokens,
           sum(output_tokens)::bigint AS output_tokens, sum(reasoning_tokens)::bigint AS reasoning_tokens,
           {_COST_UNLESS_ALL_UNPRICED},
           min(period_start) AS first_period_start, max(period_start) AS last_period_start
           {", sum(output_image_tokens)::bigint AS output_image_tokens" if image else ""}
    FROM ai_usage_rollup
    GROUP BY 1, 2
    """


FORWARDS = (
    # No usage row may be written while the rollup's functions are swapped (another instance still running).
    "LOCK TABLE ai_usage_logs IN SHARE ROW EXCLUSIVE MODE",
    "ALTER TABLE ai_usage_logs ADD COLUMN output_image_tokens bigint NOT NULL DEFAULT 0, "
    "ADD COLUMN rate_output_image numeric(38, 18) NULL, ADD COLUMN cost_output_image numeric(38, 18) NULL",
    "ALTER TABLE ai_usage_rollup ADD COLUMN output_image_tokens bigint NOT NULL DEFAULT 0",
    _drop_add(_BEFORE),
    *_functions(_AFTER),
    _daily_by_procedure(image=True),
    _by_model(image=True),
)

BACKWARDS = (
    "LOCK TABLE ai_usage_logs IN SHARE ROW EXCLUSIVE MODE",
    "DROP VIEW IF EXISTS usage_by_model",
    "DROP VIEW IF EXISTS usage_daily_by_procedure",
    _daily_by_procedure(image=False),
    _by_model(image=False),
    "COMMENT ON VIEW usage_daily_by_procedure IS 'Calls, tokens and cost per UTC day and procedure; cost_usd sums "
    "the priced calls (see unpriced_calls) and is NULL when every call was unpriced'",
    "COMMENT ON VIEW usage_by_model IS 'Calls, tokens and cost per reported model, all time; cost_usd sums the priced "
    "calls (see unpriced_calls) and is NULL when every call was unpriced'",
    _drop_add(_AFTER),
    *_functions(_BEFORE),
    "ALTER TABLE ai_usage_rollup DROP COLUMN output_image_tokens",
    "ALTER TABLE ai_usage_logs DROP COLUMN output_image_tokens, DROP COLUMN rate_output_image, "
    "DROP COLUMN cost_output_image",
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
