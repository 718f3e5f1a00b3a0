"""The data-access layer: ``Database`` over the test database, and statements with named parameters."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec
import pytest
from piccolo.engine.postgres import PostgresEngine

from server.database import Database, NamedStatement
from server.llm.recorder import RECORD_CALL, STORE_MESSAGES_ONLY
from server.tables import User
from server.users import hash_api_key
from tests.conftest import app_database


class _Pair(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int
    output_tokens: int


def test_a_placeholder_without_a_field_fails_when_the_statement_is_built() -> None:
    with pytest.raises(ValueError, match=r"placeholders without a field \['completion_tokens'\]"):
        NamedStatement("SELECT :prompt_tokens, :completion_tokens, :output_tokens", _Pair)


def test_a_field_without_a_placeholder_fails_when_the_statement_is_built() -> None:
    with pytest.raises(ValueError, match=r"fields without a placeholder \['output_tokens'\]"):
        NamedStatement("SELECT :prompt_tokens::bigint", _Pair)


def test_names_compile_to_numbered_placeholders_and_bind_by_name() -> None:
    statement = NamedStatement("SELECT :output_tokens::bigint, :prompt_tokens + :output_tokens, '{}'::jsonb", _Pair)
    assert statement.sql == "SELECT $1::bigint, $2 + $1, '{}'::jsonb"
    assert statement.names == ("output_tokens", "prompt_tokens")
    assert statement.arguments(_Pair(prompt_tokens=1000, output_tokens=7)) == (7, 1000)


def test_the_recorder_statements_bind_every_parameter_once() -> None:
    for statement in (RECORD_CALL, STORE_MESSAGES_ONLY):
        assert len(set(statement.names)) == len(statement.names)
        assert f"${len(statement.names)}" in statement.sql
        assert f"${len(statement.names) + 1}" not in statement.sql
        assert ":" + "conversation_id" not in statement.sql
    assert len(RECORD_CALL.names) == 51


async def test_fetch_fetchrow_fetchval_and_execute(db: None) -> None:
    database = app_database()
    assert await database.fetch("SELECT x FROM generate_series(1, $1) AS x", 3) == [(1,), (2,), (3,)]
    assert await database.fetchrow("SELECT 1 AS one WHERE $1", False) is None
    assert await database.fetchval("SELECT $1::int + 1", 41) == 42
    assert await database.execute("DELETE FROM users") == "DELETE 0"


async def _write_with_the_orm_and_sql_then_fail(database: Database) -> None:
    async with database.transaction() as connection:
        await User(name="orm", api_key_hash=hash_api_key("tb_1")).save()
        await connection.execute("INSERT INTO users (id, name, api_key_hash) VALUES ($1, 'sql', 'h')", uuid.uuid4())
        assert await database.fetchval("SELECT count(*) FROM users") == 2  # the method joins the transaction
        raise RuntimeError("undo")


async def test_a_transaction_commits_orm_and_sql_writes_together_or_not_at_all(db: None) -> None:
    database = app_database()
    with pytest.raises(RuntimeError, match="undo"):
        await _write_with_the_orm_and_sql_then_fail(database)
    assert await database.fetchval("SELECT count(*) FROM users") == 0

    async with database.transaction():
        await User(name="orm", api_key_hash=hash_api_key("tb_2")).save()
    assert await database.fetchval("SELECT name FROM users") == "orm"


async def test_a_snapshot_is_read_only(db: None) -> None:
    async with app_database().snapshot() as connection:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await connection.execute("DELETE FROM users")


async def test_ping_says_whether_the_database_answers(database_pool: None, unreachable_database: Database) -> None:
    assert await app_database().ping(timeout_seconds=2) is True
    assert await unreachable_database.ping(timeout_seconds=2) is False


async def test_a_running_pool_is_not_started_twice(database_pool: None) -> None:
    database = app_database()
    assert database.running is True
    with pytest.raises(RuntimeError, match="already running"):
        await database.start(min_size=1, max_size=1)


async def test_without_a_pool_nothing_runs_and_ping_says_down() -> None:
    unstarted = Database(PostgresEngine(config={"dsn": "postgresql://postgres@127.0.0.1:1/nowhere"}))
    assert unstarted.running is False
    with pytest.raises(RuntimeError, match="pool is not running"):
        await unstarted.fetch("SELECT 1")
    with pytest.raises(RuntimeError, match="pool is not running"):
        async with unstarted.transaction():
            pass
    assert await unstarted.ping(timeout_seconds=1) is False
