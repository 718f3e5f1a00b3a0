"""The schema as migrated, the migrations in both directions, and the isolation of tests from each other."""

from __future__ import annotations

import os
import uuid

import asyncpg
import pytest

from server.migrations import migrate_backwards_all, migrate_forwards
from server.tables import AiUsageLog, StreamRequest
from server.users import create_user
from tests.conftest import app_database

EXPECTED_COLUMNS: dict[str, dict[str, str]] = {
    "users": {
        "id": "uuid",
        "name": "character varying",
        "is_admin": "boolean",
        "api_key_hash": "character varying",
        "created_at": "timestamp with time zone",
    },
    "conversations": {
        "id": "uuid",
        "owner": "uuid",
        "title": "character varying",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "total_prompt_tokens": "bigint",
        "total_completion_tokens": "bigint",
        "total_tokens_used": "bigint",
        "total_cost_usd": "numeric",
        "llm_calls": "integer",
        "unpriced_calls": "integer",
        "model_distribution": "jsonb",
    },
    "messages": {
        "id": "uuid",
        "conversation": "uuid",
        "role": "character varying",
        "content": "text",
        "created_at": "timestamp with time zone",
    },
    "ai_usage_logs": {
        "id": "uuid",
        "call_id": "uuid",
        "conversation_id": "uuid",
        "message_id": "uuid",
        "user_id": "uuid",
        "procedure": "character varying",
        "provider": "character varying",
        "requested_model": "character varying",
        "model": "character varying",
        **{
            f"{bucket}_tokens": "bigint"
            for bucket in (
                "input",
                "cache_read",
                "cache_write_5m",
                "cache_write_1h",
                "output",
                "reasoning",
                "prompt",
                "completion",
                "total",
            )
        },
        "usage_estimated": "boolean",
        **{
            f"rate_{bucket}": "numeric"
            for bucket in ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")
        },
        **{
            f"cost_{bucket}": "numeric"
            for bucket in ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")
        },
        "price_source": "character varying",
        "price_tier": "character varying",
        "estimated_cost_usd": "numeric",
        "pricing_status": "character varying",
        "latency_ms": "integer",
        "status": "character varying",
        "error_type": "character varying",
        "metadata": "jsonb",
        "created_at": "timestamp with time zone",
        "saved_usd": "numeric",
        "cached_call_id": "uuid",
        "output_image_tokens": "bigint",
        "rate_output_image": "numeric",
        "cost_output_image": "numeric",
    },
    "stream_requests": {
        "id": "uuid",
        "user_id": "uuid",
        "request_id": "uuid",
        "created_at": "timestamp with time zone",
        "request_hash": "bytea",
        "response": "bytea",
    },
    "llm_call_claims": {
        "call_id": "uuid",
        "user_id": "uuid",
        "conversation_id": "uuid",
        "procedure": "character varying",
        "provider": "character varying",
        "requested_model": "character varying",
        "prompt_tokens_estimate": "bigint",
        "max_output_tokens": "integer",
        "reserved_usd": "numeric",
        "budget_ids": "ARRAY",
        "budget_period_starts": "ARRAY",
        "metadata": "jsonb",
        "created_at": "timestamp with time zone",
        "lease_expires_at": "timestamp with time zone",
    },
    "budgets": {
        "id": "uuid",
        "scope": "character varying",
        "subject_id": "uuid",
        "period": "character varying",
        "limit_usd": "numeric",
        "hard": "boolean",
        "alert_thresholds": "ARRAY",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
    },
    "budget_periods": {
        "budget_id": "uuid",
        "period_start": "timestamp with time zone",
        "spent_usd": "numeric",
        "reserved_usd": "numeric",
    },
    "budget_alerts": {
        "id": "uuid",
        "kind": "character varying",
        "budget_id": "uuid",
        "scope": "character varying",
        "subject_id": "uuid",
        "period": "character varying",
        "period_start": "timestamp with time zone",
        "threshold": "numeric",
        "limit_usd": "numeric",
        "spent_usd": "numeric",
        "baseline_usd": "numeric",
        "created_at": "timestamp with time zone",
        "attempts": "integer",
        "next_attempt_at": "timestamp with time zone",
        "delivered_at": "timestamp with time zone",
        "last_error": "text",
    },
    "idempotency_keys": {
        "user_id": "uuid",
        "procedure": "character varying",
        "idempotency_key": "character varying",
        "request_hash": "bytea",
        "claim_id": "uuid",
        "http_status": "smallint",
        "response": "bytea",
        "created_at": "timestamp with time zone",
        "lease_expires_at": "timestamp with time zone",
        "expires_at": "timestamp with time zone",
    },
    "response_cache": {
        "cache_key": "bytea",
        "user_id": "uuid",
        "procedure": "character varying",
        "provider": "character varying",
        "requested_model": "character varying",
        "model": "character varying",
        "service_tier": "character varying",
        "reply": "text",
        "usage": "jsonb",
        "call_id": "uuid",
        "created_at": "timestamp with time zone",
        "expires_at": "timestamp with time zone",
        "calls": "jsonb",
    },
    "response_cache_daily": {
        "day": "date",
        "procedure": "character varying",
        "entries_created": "bigint",
        "entries_replaced": "bigint",
        "entries_expired": "bigint",
    },
    "idempotent_replay_counts": {
        "day": "date",
        "procedure": "character varying",
        "replays": "bigint",
        "deduplicated": "bigint",
    },
}


async def _columns(connection: asyncpg.Connection) -> dict[str, dict[str, tuple[str, int | None]]]:
    rows = await connection.fetch(
        "SELECT table_name, column_name, data_type, numeric_scale FROM information_schema.columns "
        "WHERE table_schema = 'public'"
    )
    tables: dict[str, dict[str, tuple[str, int | None]]] = {}
    for row in rows:
        tables.setdefault(row["table_name"], {})[row["column_name"]] = (
            row["data_type"],
            row["numeric_scale"],
        )
    return tables


async def _indexed_columns(connection: asyncpg.Connection, table: str) -> set[str]:
    rows = await connection.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] WHERE c.relname = $1",
        table,
    )
    return {row["attname"] for row in rows}


async def test_every_table_and_column_exists_with_its_type(database_pool: None) -> None:
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        tables = await _columns(connection)
        for table, columns in EXPECTED_COLUMNS.items():
            assert table in tables, table
            actual = {name: kind for name, (kind, _) in tables[table].items()}
            assert actual == columns, table
        money = [(t, c) for t, cols in tables.items() for c, (kind, _) in cols.items() if kind == "numeric"]
        assert money
        for table, column in money:
            scale = tables[table][column][1]
            assert scale is not None, (table, column)
            assert scale >= 12, (table, column)
        indexed = await _indexed_columns(connection, "ai_usage_logs")
        assert {"conversation_id", "created_at", "model", "procedure", "call_id"} <= indexed
    finally:
        await connection.close()


async def test_call_id_is_unique(db: None) -> None:
    row = {
        "call_id": "00000000-0000-0000-0000-000000000001",
        "procedure": "chat.sendMessage",
        "provider": "openai",
        "requested_model": "gpt-4o",
        "model": "gpt-4o",
        "pricing_status": "priced",
        "status": "ok",
    }
    await AiUsageLog.insert(AiUsageLog(**row))
    with pytest.raises(asyncpg.UniqueViolationError):
        await AiUsageLog.insert(AiUsageLog(**row))


async def test_a_stream_request_id_is_unique_per_user(db: None) -> None:
    alice, bob, request_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await StreamRequest.insert(
        StreamRequest(user_id=alice, request_id=request_id), StreamRequest(user_id=bob, request_id=request_id)
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await StreamRequest.insert(StreamRequest(user_id=alice, request_id=request_id))


async def test_migrations_run_backwards_and_forwards_from_empty(database_pool: None) -> None:
    database = app_database()
    await migrate_backwards_all()
    remaining = await database.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_name = ANY($1::text[])",
        list(EXPECTED_COLUMNS),
    )
    assert remaining == []
    await migrate_forwards()
    restored = await database.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_name = ANY($1::text[])",
        list(EXPECTED_COLUMNS),
    )
    assert {row["table_name"] for row in restored} == set(EXPECTED_COLUMNS)


# The two tests below each create the same user and expect to see only their own: whichever runs second would see
# the first one's row if tests were not isolated.
@pytest.mark.parametrize("attempt", [1, 2])
async def test_each_test_starts_with_an_empty_database(db: None, attempt: int) -> None:
    from server.tables import User

    assert await User.count() == 0
    await create_user("isolation-probe")
    assert await User.count() == 1
