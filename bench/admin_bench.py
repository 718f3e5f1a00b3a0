"""Benchmark of the admin and conversation reads on a realistically large usage table.

Creates (or, with ``--reuse``, keeps) a dedicated database, migrates it, fills it with ``--rows`` usage rows over
``--conversations`` conversations and ``--days`` days (totals consistent with the rows, as the recorder keeps them),
then times every query helper (p50 / p99 over repeated runs) and prints the EXPLAIN (ANALYZE, BUFFERS) plan of every
statement each helper ran.

    .venv/bin/python bench/admin_bench.py                   # 1,000,000 rows (about two minutes to fill)
    .venv/bin/python bench/admin_bench.py --rows 100000     # a quick run
    .venv/bin/python bench/admin_bench.py --database-url postgresql://user@host:5432/postgres --reuse

The database is created on the embedded PostgreSQL that ``python -m server`` uses (``DATA_DIR/postgres``), or on the
server ``--database-url`` or ``BENCH_DATABASE_URL`` names; the first line of output says which.

The rows are generated in SQL (``generate_series``), in time order as a live system would insert them, in chunks
so that progress can be shown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from bench_database import add_argument as add_database_argument
from bench_database import server_url, with_database

CHUNK = 100_000

# name, provider, share of calls, USD per 1M tokens: input, cache read, cache write 5m, cache write 1h, output
# (None: no known price, the calls are recorded as unpriced).
MODELS: tuple[tuple[str, str, float, tuple[str, str, str, str, str] | None], ...] = (
    ("gpt-4o", "openai", 0.20, ("2.5", "1.25", "2.5", "2.5", "10")),
    ("gpt-4o-mini", "openai", 0.28, ("0.15", "0.075", "0.15", "0.15", "0.6")),
    ("claude-sonnet-4-5", "anthropic", 0.18, ("3", "0.3", "3.75", "6", "15")),
    ("claude-haiku-4-5", "anthropic", 0.12, ("1", "0.1", "1.25", "2", "5")),
    ("gemini-2.5-pro", "gemini", 0.08, ("1.25", "0.125", "1.25", "1.25", "10")),
    ("gemini-2.5-flash", "gemini", 0.12, ("0.3", "0.03", "0.3", "0.3", "2.5")),
    ("acme-finetune-v2", "openai", 0.02, None),
)
PROCEDURES: tuple[tuple[str, float], ...] = (
    ("chat.sendMessage", 0.60),
    ("chat.executeAction", 0.25),
    ("chat.summarizeEmail", 0.15),
)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- filling ------------------------------------------------------------------------------------------------------


async def _create_database(server_url: str, name: str, *, reuse: bool) -> bool:
    """Create the bench database; True when it already existed and ``reuse`` keeps it."""
    connection = await asyncpg.connect(server_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and reuse:
            return True
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
        return False
    finally:
        await connection.close()


def _cumulative(weights: tuple[float, ...]) -> list[tuple[float, float]]:
    total, bounds, low = sum(weights), [], 0.0
    for weight in weights:
        high = low + weight / total
        bounds.append((low, high))
        low = high
    bounds[-1] = (bounds[-1][0], 1.0 + 1e-9)
    return bounds


_USAGE_CHUNK = """
INSERT INTO ai_usage_logs (
    id, call_id, conversation_id, message_id, user_id, procedure, provider, requested_model, model,
    input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens,
    prompt_tokens, completion_tokens, total_tokens, usage_estimated,
    rate_input, rate_cache_read, rate_cache_write_5m, rate_cache_write_1h, rate_output, price_source, price_tier,
    cost_input, cost_cache_read, cost_cache_write_5m, cost_cache_write_1h, cost_output, estimated_cost_usd,
    pricing_status, latency_ms, status, error_type, metadata, created_at
)
SELECT gen_random_uuid(), gen_random_uuid(), c.id, NULL, coalesce(c.owner, u.id), p.name, m.provider, m.name, m.name,
       t.input, t.cache_read, t.cache_write_5m, t.cache_write_1h, t.output, t.reasoning,
       t.input + t.cache_read + t.cache_write_5m + t.cache_write_1h, t.output,
       t.input + t.cache_read + t.cache_write_5m + t.cache_write_1h + t.output, false,
       m.rate_input, m.rate_cache_read, m.rate_cache_write_5m, m.rate_cache_write_1h, m.rate_output,
       CASE WHEN m.priced THEN 'bench' END, NULL,
       k.cost_input, k.cost_cache_read, k.cost_cache_write_5m, k.cost_cache_write_1h, k.cost_output,
       k.cost_input + k.cost_cache_read + k.cost_cache_write_5m + k.cost_cache_write_1h + k.cost_output,
       CASE WHEN m.priced THEN 'priced' ELSE 'unpriced' END,
       (200 + r.r5 * 3000)::int,
       CASE WHEN r.r4 < 0.01 THEN 'error' WHEN r.r4 < 0.013 THEN 'cancelled' ELSE 'ok' END,
       CASE WHEN r.r4 < 0.01 THEN 'RateLimitError' END,
       '{"schema_version": 1}'::jsonb,
       $3::timestamptz + (g::float8 / $4) * ($5 * interval '1 day') + r.r6 * interval '1 second'
FROM generate_series($1::bigint, $2::bigint) AS g
CROSS JOIN LATERAL (
    SELECT random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5, random() AS r6,
           random() AS r7, random() AS r8, g AS n
) r
JOIN bench_models m ON r.r1 >= m.low AND r.r1 < m.high
JOIN bench_procedures p ON r.r2 >= p.low AND r.r2 < p.high
LEFT JOIN bench_conversations c
    ON r.r3 >= 0.05 AND c.n = least($6 - 1, floor((g::float8 / $4) * $6 * 0.9 + r.r7 * $6 * 0.1))::int
LEFT JOIN bench_users u ON u.n = floor(r.r8 * $7)::int
CROSS JOIN LATERAL (
    SELECT CASE WHEN r.r4 < 0.01 THEN 0 ELSE (50 + r.r5 * 4000)::bigint END AS input,
           CASE WHEN r.r4 < 0.01 OR m.provider = 'anthropic' OR r.r6 < 0.5 THEN 0
                ELSE (r.r6 * 3000)::bigint END AS cache_read,
           CASE WHEN r.r4 >= 0.01 AND m.provider = 'anthropic' AND r.r6 < 0.3 THEN (r.r7 * 2000)::bigint
                ELSE 0 END AS cache_write_5m,
           CASE WHEN r.r4 >= 0.01 AND m.provider = 'anthropic' AND r.r6 > 0.9 THEN (r.r8 * 2000)::bigint
                ELSE 0 END AS cache_write_1h,
           CASE WHEN r.r4 < 0.01 THEN 0 ELSE (20 + r.r7 * 1500)::bigint END AS output,
           CASE WHEN r.r4 >= 0.01 AND m.name = 'gemini-2.5-pro' THEN (r.r7 * 10)::bigint ELSE 0 END AS reasoning
) t
CROSS JOIN LATERAL (
    SELECT (t.input * m.rate_input / 1000000)::numeric(38, 18) AS cost_input,
           (t.cache_read * m.rate_cache_read / 1000000)::numeric(38, 18) AS cost_cache_read,
           (t.cache_write_5m * m.rate_cache_write_5m / 1000000)::numeric(38, 18) AS cost_cache_write_5m,
           (t.cache_write_1h * m.rate_cache_write_1h / 1000000)::numeric(38, 18) AS cost_cache_write_1h,
           (t.output * m.rate_output / 1000000)::numeric(38, 18) AS cost_output
) k
"""

# Exactly what the recorder's increments add up to (see server/llm/recorder.py).
_TOTALS = """
WITH per_model AS (
    SELECT conversation_id, model, count(*) AS calls,
           count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_calls,
           sum(input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens) AS prompt_tokens,
           sum(output_tokens) AS completion_tokens,
           coalesce(sum(estimated_cost_usd), 0) AS cost_usd,
           min(created_at) AS first_at, max(created_at) AS last_at
    FROM ai_usage_logs WHERE conversation_id IS NOT NULL
    GROUP BY conversation_id, model
), sums AS (
    SELECT conversation_id, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
           sum(cost_usd) AS cost_usd, sum(calls) AS calls, sum(unpriced_calls) AS unpriced_calls,
           min(first_at) AS first_at, max(last_at) AS last_at,
           jsonb_object_agg(model, jsonb_build_object(
               'calls', calls, 'unpriced', unpriced_calls, 'tokens', prompt_tokens + completion_tokens,
               'cost_usd', cost_usd::text)) AS distribution
    FROM per_model GROUP BY conversation_id
)
UPDATE conversations c SET
    created_at = s.first_at, updated_at = s.last_at,
    total_prompt_tokens = s.prompt_tokens, total_completion_tokens = s.completion_tokens,
    total_tokens_used = s.prompt_tokens + s.completion_tokens, total_cost_usd = s.cost_usd,
    llm_calls = s.calls, unpriced_calls = s.unpriced_calls, model_distribution = s.distribution
FROM sums s WHERE c.id = s.conversation_id
"""

_MESSAGES = """
INSERT INTO messages (id, conversation, role, content, created_at)
SELECT gen_random_uuid(), c.id, CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END,
       repeat('lorem ipsum ', 20), c.created_at + (c.updated_at - c.created_at) * (i::float8 / $1)
FROM conversations c CROSS JOIN generate_series(1, $1) AS i
"""


async def fill(url: str, *, rows: int, conversations: int, users: int, days: int, end: datetime) -> None:
    connection = await asyncpg.connect(url)
    try:
        start = end - timedelta(days=days)
        await connection.execute("SELECT setseed(0.42)")
        await connection.execute(
            "CREATE UNLOGGED TABLE bench_models (name text, provider text, low float8, high float8, priced bool, "
            "rate_input numeric, rate_cache_read numeric, rate_cache_write_5m numeric, rate_cache_write_1h numeric, "
            "rate_output numeric)"
        )
        for (name, provider, _, rates), (low, high) in zip(
            MODELS, _cumulative(tuple(m[2] for m in MODELS)), strict=True
        ):
            await connection.execute(
                "INSERT INTO bench_models VALUES ($1, $2, $3, $4, $5, $6::numeric, $7::numeric, $8::numeric, "
                "$9::numeric, $10::numeric)",
                name,
                provider,
                low,
                high,
                rates is not None,
                *(rates or (None,) * 5),
            )
        await connection.execute("CREATE UNLOGGED TABLE bench_procedures (name text, low float8, high float8)")
        for (name, _), (low, high) in zip(PROCEDURES, _cumulative(tuple(p[1] for p in PROCEDURES)), strict=True):
            await connection.execute("INSERT INTO bench_procedures VALUES ($1, $2, $3)", name, low, high)

        _progress(f"users: {users}")
        await connection.execute(
            "CREATE UNLOGGED TABLE bench_users AS SELECT n, gen_random_uuid() AS id FROM generate_series(0, $1 - 1) n",
            users,
        )
        await connection.execute(
            "INSERT INTO users (id, name, is_admin, api_key_hash, created_at) "
            "SELECT id, 'bench user ' || n, false, encode(sha256(id::text::bytea), 'hex'), $1 FROM bench_users",
            start,
        )
        _progress(f"conversations: {conversations}")
        await connection.execute(
            "CREATE UNLOGGED TABLE bench_conversations AS "
            "SELECT s.n, gen_random_uuid() AS id, u.id AS owner FROM generate_series(0, $1 - 1) AS s(n) "
            "JOIN bench_users u ON u.n = s.n % $2",
            conversations,
            users,
        )
        await connection.execute("CREATE UNIQUE INDEX ON bench_conversations (n)")
        await connection.execute(
            "INSERT INTO conversations (id, owner, title, created_at, updated_at) "
            "SELECT id, owner, 'bench conversation ' || n, $1, $1 FROM bench_conversations",
            start,
        )
        await connection.execute("ANALYZE bench_models, bench_procedures, bench_users, bench_conversations")

        began = time.perf_counter()
        for low in range(1, rows + 1, CHUNK):
            high = min(rows, low + CHUNK - 1)
            await connection.execute(_USAGE_CHUNK, low, high, start, rows, days, conversations, users)
            elapsed = time.perf_counter() - began
            _progress(f"usage rows: {high:,}/{rows:,} ({high / elapsed:,.0f} rows/s)")
        _progress("conversation totals and model distributions")
        await connection.execute(_TOTALS)
        _progress("messages: 20 per conversation")
        await connection.execute(_MESSAGES, 20)
        await connection.execute("DROP TABLE bench_models, bench_procedures, bench_users, bench_conversations")
        # Loading a million rows in minutes updated every rollup row hundreds of times in a row; a live system
        # spreads those updates over 90 days and autovacuum reuses the space. Compact it to look like that.
        _progress("VACUUM FULL ai_usage_rollup, VACUUM ANALYZE")
        await connection.execute("VACUUM FULL ai_usage_rollup")
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


# --- timing -------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    run: Callable[[], Awaitable[Any]]
    repeat: int


@dataclass(eq=False)
class Captured:
    statements: list[tuple[str, tuple[Any, ...]]]
    active: bool = False

    def __call__(self, record: Any) -> None:
        text = record.query.lstrip().upper()
        # The pool's reset query (pg_advisory_unlock_all...) runs when a connection is released: not ours.
        if self.active and text.startswith(("SELECT", "WITH")) and "PG_ADVISORY_UNLOCK_ALL" not in text:
            self.statements.append((record.query, tuple(record.args or ())))


def _ms(seconds: float) -> float:
    return seconds * 1000


async def _time_case(case: Case) -> tuple[float, float, float]:
    await case.run()  # warm up: prepared statement and caches
    samples = []
    for _ in range(case.repeat):
        began = time.perf_counter()
        await case.run()
        samples.append(time.perf_counter() - began)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return _ms(statistics.median(samples)), _ms(p99), _ms(samples[0])


async def bench(url: str, *, repeat: int, plans: bool, end: datetime) -> None:
    from schemas.admin import (
        ConversationCostInput,
        TopConversationsInput,
        UnpricedCallsInput,
        UsageByDateRangeInput,
        UsageByModelInput,
        UsageByProcedureInput,
    )
    from server.admin.consistency import check_totals
    from server.admin.queries import (
        get_top_conversations_by_cost,
        get_unpriced_calls,
        get_usage_by_conversation,
        get_usage_by_date_range,
        get_usage_by_model,
        get_usage_by_procedure,
    )
    from server.conversations import get_conversation, list_conversations
    from server.database import Database

    captured = Captured(statements=[])

    async def log_queries(connection: asyncpg.Connection) -> None:
        connection.add_query_logger(captured)

    db = Database.from_piccolo_conf()
    await db.start(min_size=1, max_size=4, setup=log_queries)
    try:
        ids = await db.fetch("SELECT id, owner FROM conversations")
        count = await db.fetchval("SELECT count(*) FROM ai_usage_logs")
        rng = random.Random(7)
        picks = [rng.choice(ids) for _ in range(max(repeat * 4, 200))]
        cursor = iter(picks * 100)

        def next_conversation() -> tuple[uuid.UUID, uuid.UUID]:
            row = next(cursor)
            return row["id"], row["owner"]

        last30 = end - timedelta(days=30)
        cases = [
            Case(
                "getConversationCost (random conversation, 50 rows)",
                lambda: get_usage_by_conversation(db, ConversationCostInput(conversation_id=next_conversation()[0])),
                repeat * 4,
            ),
            Case(
                "usageByDateRange 30 days by day, Europe/Berlin",
                lambda: get_usage_by_date_range(
                    db, UsageByDateRangeInput(start=last30, end=end, granularity="day", time_zone="Europe/Berlin")
                ),
                repeat,
            ),
            Case(
                "usageByDateRange 90 days by week, UTC",
                lambda: get_usage_by_date_range(
                    db,
                    UsageByDateRangeInput(start=end - timedelta(days=90), end=end, granularity="week", time_zone="UTC"),
                ),
                repeat,
            ),
            Case(
                "usageByModel 30 days",
                lambda: get_usage_by_model(db, UsageByModelInput(start=last30, end=end)),
                repeat,
            ),
            Case(
                "usageByModel 30 days, one model",
                lambda: get_usage_by_model(db, UsageByModelInput(start=last30, end=end, model="claude-sonnet-4-5")),
                repeat,
            ),
            Case("usageByModel all time", lambda: get_usage_by_model(db, UsageByModelInput()), max(5, repeat // 4)),
            Case(
                "usageByProcedure 30 days",
                lambda: get_usage_by_procedure(db, UsageByProcedureInput(start=last30, end=end)),
                repeat,
            ),
            Case(
                "topConversationsByCost all time, top 10",
                lambda: get_top_conversations_by_cost(db, TopConversationsInput()),
                repeat,
            ),
            Case(
                "topConversationsByCost 30 days, top 10",
                lambda: get_top_conversations_by_cost(db, TopConversationsInput(start=last30, end=end)),
                repeat,
            ),
            Case(
                "unpricedCalls 30 days, 50 rows",
                lambda: get_unpriced_calls(db, UnpricedCallsInput(start=last30, end=end)),
                repeat,
            ),
            Case(
                "chat.listConversations (20)",
                lambda: list_conversations(db, next_conversation()[1]),
                repeat * 4,
            ),
            Case(
                "chat.getConversation (100 messages)",
                lambda: get_conversation(db, *reversed(next_conversation())),
                repeat * 4,
            ),
            Case("check-totals (every conversation)", lambda: check_totals(db), 1),
        ]
        print(f"\nusage rows: {count:,}; times in ms over repeated runs (after one warm-up run)\n")
        print(f"{'query':<52} {'runs':>5} {'p50':>9} {'p99':>9} {'min':>9}")
        results = []
        for case in cases:
            p50, p99, fastest = await _time_case(case)
            results.append((case, p50, p99))
            print(f"{case.name:<52} {case.repeat:>5} {p50:>9.2f} {p99:>9.2f} {fastest:>9.2f}", flush=True)
        _verdicts(results)
        report = await check_totals(db)
        print(
            f"check-totals: {report.conversations} conversations, {len(report.differences)} differences, "
            f"{len(report.rollup_differences)} rollup differences"
        )

        if plans:
            for case in cases:
                captured.statements.clear()
                captured.active = True
                await case.run()
                captured.active = False
                print(f"\n{'=' * 120}\n{case.name}\n{'=' * 120}")
                for query, args in list(captured.statements):
                    print(" ".join(query.split())[:300])
                    try:
                        rows = await db.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", *args)
                    except asyncpg.PostgresError as error:
                        print(f"(cannot explain: {error})")
                    else:
                        print("\n".join(row["QUERY PLAN"] for row in rows))
                    print("-" * 120)
    finally:
        await db.close()


def _verdicts(results: list[tuple[Case, float, float]]) -> None:
    targets = {
        "getConversationCost (random conversation, 50 rows)": 5.0,
        "usageByDateRange 30 days by day, Europe/Berlin": 100.0,
        "usageByModel 30 days": 100.0,
    }
    print()
    for case, p50, _ in results:
        if case.name in targets:
            target = targets[case.name]
            verdict = "met" if p50 < target else "MISSED"
            print(f"target {case.name}: p50 {p50:.2f} ms < {target:.0f} ms: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage rows to generate (default 1,000,000)")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=90, help="the rows span this many days up to now")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs per query (more for the per-id reads)")
    parser.add_argument("--database", default="tollbooth_bench", help="the database to create (dropped first)")
    parser.add_argument("--reuse", action="store_true", help="keep an existing bench database instead of refilling")
    parser.add_argument("--no-plans", dest="plans", action="store_false", help="do not print EXPLAIN plans")
    add_database_argument(parser)
    args = parser.parse_args()

    admin_url = server_url(args.database_url)
    url = with_database(admin_url, args.database)
    os.environ["DATABASE_URL"] = url  # read by piccolo_conf when the server modules are first imported

    async def run() -> None:
        reused = await _create_database(admin_url, args.database, reuse=args.reuse)
        from server.migrations import migrate_forwards

        await migrate_forwards()
        end = datetime.now(UTC).replace(microsecond=0)
        if reused:
            connection = await asyncpg.connect(url)
            latest = await connection.fetchval("SELECT max(created_at) FROM ai_usage_logs")
            await connection.close()
            end = latest + timedelta(seconds=1) if latest is not None else end
            _progress(f"reusing database {args.database}")
        else:
            _progress(f"filling database {args.database}: {args.rows:,} usage rows")
            began = time.perf_counter()
            await fill(url, rows=args.rows, conversations=args.conversations, users=args.users, days=args.days, end=end)
            _progress(f"filled in {time.perf_counter() - began:.1f} s")
        await bench(url, repeat=args.repeat, plans=args.plans, end=end)

    asyncio.run(run())


if __name__ == "__main__":
    main()
