"""The caller's own conversations: the list, and one conversation with its messages and totals.

Every statement filters by owner, so a conversation of another user reads exactly like a missing one
(``ConversationNotFoundError`` either way) and an id reveals nothing. The totals come from the conversation row, which
the recorder keeps equal to the sums over its usage rows; nothing is re-aggregated per request.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Final

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from piccolo.engine.postgres import PostgresEngine

from schemas.conversations import (
    ConversationDetail,
    ConversationList,
    ConversationMessage,
    ConversationSummary,
    ModelShare,
)
from schemas.validation import InvalidInput, Position, decode_cursor, encode_cursor
from server.chat.service import ConversationNotFoundError
from server.llm.recorder import totals_from_row
from server.money import tidy

__all__ = (
    "StoredShare",
    "distribution_decoder",
    "get_conversation",
    "list_conversations",
    "model_shares",
    "read_snapshot",
    "resolve_engine",
)

DEFAULT_CONVERSATIONS: Final = 20
MAX_CONVERSATIONS: Final = 100
DEFAULT_MESSAGES: Final = 100
MAX_MESSAGES: Final = 500

CONVERSATION_COLUMNS: Final = """
    c.id, c.owner, c.title, c.created_at, c.updated_at, c.total_prompt_tokens, c.total_completion_tokens,
    c.total_tokens_used, c.total_cost_usd, c.llm_calls, c.unpriced_calls"""

_LIST: Final = f"""
SELECT {CONVERSATION_COLUMNS}
FROM conversations c
WHERE c.owner = $1
ORDER BY c.updated_at DESC, c.id DESC
LIMIT $2
"""
_LIST_AFTER: Final = f"""
SELECT {CONVERSATION_COLUMNS}
FROM conversations c
WHERE c.owner = $1 AND (c.updated_at, c.id) < ($3, $4)
ORDER BY c.updated_at DESC, c.id DESC
LIMIT $2
"""
_CONVERSATION: Final = f"""
SELECT {CONVERSATION_COLUMNS}, c.model_distribution::text AS model_distribution
FROM conversations c
WHERE c.id = $1 AND c.owner = $2
"""
_MESSAGES: Final = """
SELECT id, role, content, created_at
FROM messages
WHERE conversation = $1
ORDER BY created_at DESC, id DESC
LIMIT $2
"""
_MESSAGES_BEFORE: Final = """
SELECT id, role, content, created_at
FROM messages
WHERE conversation = $1 AND (created_at, id) < ($3, $4)
ORDER BY created_at DESC, id DESC
LIMIT $2
"""


class StoredShare(msgspec.Struct, frozen=True, kw_only=True):
    """One model's entry in a conversation's stored ``model_distribution`` JSON."""

    calls: int = 0
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)


distribution_decoder: Final = msgspec.json.Decoder(dict[str, StoredShare])


def model_shares(model_distribution: str) -> list[ModelShare]:
    """The stored ``model_distribution`` JSON as wire Structs, most expensive model first."""
    shares = [
        ModelShare(model=model, calls=share.calls, tokens=share.tokens, cost_usd=tidy(share.cost_usd))
        for model, share in distribution_decoder.decode(model_distribution).items()
    ]
    shares.sort(key=lambda s: (-s.cost_usd, -s.calls, s.model))
    return shares


@asynccontextmanager
async def read_snapshot(engine: PostgresEngine) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
    """A pooled connection in a read-only REPEATABLE READ transaction.

    A read made of several statements then sees one state of the database: totals and the rows they sum can never
    disagree because a call was recorded between two statements.
    """
    if engine.pool is None:
        raise RuntimeError("the database connection pool is not running")
    async with engine.pool.acquire() as connection, connection.transaction(isolation="repeatable_read", readonly=True):
        yield connection


def resolve_engine(engine: PostgresEngine | None) -> PostgresEngine:
    """``engine``, or the application's (``piccolo_conf.DB``) when None."""
    if engine is not None:
        return engine
    from server.app import database_engine  # here: server.app imports the procedures that import this module

    return database_engine()


async def list_conversations(
    user_id: uuid.UUID,
    *,
    limit: int = DEFAULT_CONVERSATIONS,
    cursor: str | None = None,
    engine: PostgresEngine | None = None,
) -> ConversationList:
    """The caller's conversations, most recent activity first; pass ``nextCursor`` back as ``cursor`` for more."""
    _check_limit(limit, MAX_CONVERSATIONS)
    pool_engine = resolve_engine(engine)
    if cursor is None:
        rows = await pool_engine._run_in_pool(_LIST, [user_id, limit + 1])
    else:
        after = decode_cursor(cursor)
        rows = await pool_engine._run_in_pool(_LIST_AFTER, [user_id, limit + 1, after.at, after.id])
    page = rows[:limit]
    items = [
        ConversationSummary(
            id=row["id"],
            title=row["title"],
            created_at=row["created_at"],
            last_activity_at=row["updated_at"],
            totals=totals_from_row(row),
        )
        for row in page
    ]
    more = len(rows) > limit
    next_cursor = encode_cursor(Position(at=page[-1]["updated_at"], id=page[-1]["id"])) if more else None
    return ConversationList(items=items, next_cursor=next_cursor)


async def get_conversation(
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    limit: int = DEFAULT_MESSAGES,
    cursor: str | None = None,
    engine: PostgresEngine | None = None,
) -> ConversationDetail:
    """One of the caller's conversations with its latest ``limit`` messages, oldest first.

    Raises ``ConversationNotFoundError`` when no conversation with this id belongs to ``user_id``.
    """
    _check_limit(limit, MAX_MESSAGES)
    async with read_snapshot(resolve_engine(engine)) as connection:
        conversation = await connection.fetchrow(_CONVERSATION, conversation_id, user_id)
        if conversation is None:
            raise ConversationNotFoundError(conversation_id)
        if cursor is None:
            messages = await connection.fetch(_MESSAGES, conversation_id, limit + 1)
        else:
            before = decode_cursor(cursor)
            messages = await connection.fetch(_MESSAGES_BEFORE, conversation_id, limit + 1, before.at, before.id)
    page = messages[:limit]
    earlier = len(messages) > limit
    return ConversationDetail(
        id=conversation["id"],
        title=conversation["title"],
        created_at=conversation["created_at"],
        last_activity_at=conversation["updated_at"],
        totals=totals_from_row(conversation),
        model_distribution=model_shares(conversation["model_distribution"]),
        messages=[
            ConversationMessage(id=m["id"], role=m["role"], content=m["content"], created_at=m["created_at"])
            for m in reversed(page)
        ],
        earlier_cursor=encode_cursor(Position(at=page[-1]["created_at"], id=page[-1]["id"])) if earlier else None,
    )


def _check_limit(limit: int, most: int) -> None:
    if not 1 <= limit <= most:
        raise InvalidInput("limit", f"`limit` must be between 1 and {most}")
