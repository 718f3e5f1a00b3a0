"""The hot path's database traffic, counted where it happens: every query a pooled connection sends to PostgreSQL,
session resets and ``BEGIN``/``COMMIT`` included (asyncpg's query logger sees them all)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from piccolo.engine import engine_finder
from piccolo.engine.postgres import PostgresEngine

from schemas.chat import SendMessageInput
from server.database import Database
from server.users import NewUser
from tests.conftest import MakeServices


@pytest.fixture
async def logged_database(db: None) -> AsyncIterator[tuple[Database, list[str]]]:
    """A pool of its own on the test database, logging the text of every query its connections run."""
    engine = engine_finder()
    assert isinstance(engine, PostgresEngine)
    queries: list[str] = []

    async def log(connection: asyncpg.Connection[asyncpg.Record]) -> None:
        connection.add_query_logger(lambda record: queries.append(record.query))

    database = Database(PostgresEngine(config=dict(engine.config)))
    await database.start(min_size=1, max_size=4, setup=log)
    yield database, queries
    await database.close()


async def test_a_message_costs_two_round_trips_the_claim_and_the_record(
    make_services: MakeServices, alice: NewUser, logged_database: tuple[Database, list[str]]
) -> None:
    """The claim must be committed before the provider is called, and the record (usage row, conversation, messages,
    totals, claim settled) is one statement after it: no session reset on release, no BEGIN or COMMIT around it."""
    database, queries = logged_database
    services = make_services(database)
    ask = SendMessageInput(message="What does a token cost?", model="gpt-4o-mini")
    first = await services.chat.send_message(alice.id, ask)  # prepares the statements on this connection
    queries.clear()
    again = SendMessageInput(message="And a cached one?", conversation_id=first.conversation_id, model="gpt-4o-mini")
    await services.chat.send_message(alice.id, again)
    assert len(queries) == 3, queries  # a conversation's message reads its history first
    history, claim, record = queries
    assert "messages" in history
    assert "INSERT INTO llm_call_claims" in claim
    assert "INSERT INTO ai_usage_logs" in record
    queries.clear()
    await services.chat.send_message(alice.id, ask)
    assert len(queries) == 2, queries
