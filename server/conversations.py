"""The conversations repository: every read of ``conversations`` and ``messages`` that chat and admin share.

It sits below both domains (and below the recorder, which builds its totals with ``totals_from_row``), so neither
imports the other. Every statement here that takes an owner filters by it, so a conversation of another user reads
exactly like a missing one (``ConversationNotFoundError`` either way) and an id reveals nothing. The totals come from
the conversation row, which the recorder keeps equal to the sums over its usage rows; nothing is re-aggregated per
request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

import asyncpg
import msgspec

from schemas.conversations import (
    ConversationDetail,
    ConversationList,
    ConversationMessage,
    ConversationSummary,
)
from schemas.money import Money
from schemas.usage import ConversationTotals, ModelShare, group_cost
from schemas.validation import InvalidInput, Position, decode_cursor, encode_cursor
from server.database import Database
from server.errors import ConversationNotFoundError

__all__ = (
    "CONVERSATION_COLUMNS",
    "History",
    "StoredShare",
    "distribution_decoder",
    "ensure_owned",
    "get_conversation",
    "list_conversations",
    "model_shares",
    "recent_history",
    "totals_from_row",
)

DEFAULT_CONVERSATIONS: Final = 20
MAX_CONVERSATIONS: Final = 100
DEFAULT_MESSAGES: Final = 100
MAX_MESSAGES: Final = 500

CONVERSATION_COLUMNS: Final = """
    c.id, c.owner, c.title, c.created_at, c.updated_at, c.total_prompt_tokens, c.total_completion_tokens,
    c.total_tokens_used, c.total_cost_usd, c.llm_calls, c.unpriced_calls"""
"""The ``conversations`` columns of a summary and its totals (``totals_from_row``), for a table aliased ``c``."""

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
# One row with NULLs for an owned conversation without messages, none for a missing or foreign one. Every row also
# carries the model that wrote the last reply: the newest usage row with a message, found backwards along the index
# ai_usage_logs_conversation_created (a failed call or an action in between is a row or two more to step over).
_HISTORY: Final = """
SELECT m.role, m.content, reply.requested_model AS model
FROM conversations c
LEFT JOIN LATERAL (
    SELECT role, content, created_at FROM messages
    WHERE conversation = c.id ORDER BY created_at DESC LIMIT $3
) m ON true
LEFT JOIN LATERAL (
    SELECT requested_model FROM ai_usage_logs
    WHERE conversation_id = c.id AND status IN ('ok', 'cache_hit') AND message_id IS NOT NULL
    ORDER BY created_at DESC, id DESC LIMIT 1
) reply ON true
WHERE c.id = $1 AND c.owner = $2
ORDER BY m.created_at
"""
_OWNED: Final = "SELECT 1 FROM conversations WHERE id = $1 AND owner = $2"

Role = Literal["user", "assistant", "system"]


@dataclass(frozen=True, slots=True)
class History:
    """What a follow-up in a conversation needs: its latest messages and the model it has been answered by."""

    messages: list[tuple[Role, str]]
    """``(role, content)``, oldest first."""
    model: str | None
    """The model the call that wrote the last reply asked for (not the snapshot the provider reported, which may
    route nowhere); None when no usage row says (``ENABLE_USAGE_LOGGING=false``)."""


class StoredShare(msgspec.Struct, frozen=True, kw_only=True):
    """One model's entry in a conversation's stored ``model_distribution`` JSON."""

    calls: int = 0
    unpriced: int = 0
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)


distribution_decoder: Final = msgspec.json.Decoder(dict[str, StoredShare])


def model_shares(model_distribution: str) -> list[ModelShare]:
    """The stored ``model_distribution`` JSON as wire Structs, most expensive model first (models whose calls were
    all unpriced last, by calls)."""
    shares = [
        ModelShare(
            model=model,
            llm_calls=share.calls,
            unpriced_calls=share.unpriced,
            total_tokens_used=share.tokens,
            total_cost_usd=group_cost(Money(share.cost_usd), share.calls, share.unpriced),
        )
        for model, share in distribution_decoder.decode(model_distribution).items()
    ]
    shares.sort(key=lambda s: (s.total_cost_usd is None, -(s.total_cost_usd or 0), -s.llm_calls, s.model))
    return shares


def totals_from_row(row: asyncpg.Record) -> ConversationTotals:
    """A conversation's totals from a row holding its ``conversations`` columns."""
    return ConversationTotals(
        total_prompt_tokens=row["total_prompt_tokens"],
        total_output_tokens=row["total_completion_tokens"],  # the output buckets, text and image (DESIGN's name)
        total_tokens_used=row["total_tokens_used"],
        total_cost_usd=group_cost(row["total_cost_usd"], row["llm_calls"], row["unpriced_calls"]),
        llm_calls=row["llm_calls"],
        unpriced_calls=row["unpriced_calls"],
    )


async def list_conversations(
    db: Database,
    user_id: uuid.UUID,
    *,
    limit: int = DEFAULT_CONVERSATIONS,
    cursor: str | None = None,
) -> ConversationList:
    """The caller's conversations, most recent activity first; pass ``nextCursor`` back as ``cursor`` for more.

    Raises ``InvalidInput`` for a ``limit`` outside 1 to ``MAX_CONVERSATIONS`` or a cursor this server did not issue.
    """
    _check_limit(limit, MAX_CONVERSATIONS)
    if cursor is None:
        rows = await db.fetch(_LIST, user_id, limit + 1)
    else:
        after = decode_cursor(cursor)
        rows = await db.fetch(_LIST_AFTER, user_id, limit + 1, after.at, after.id)
    page = rows[:limit]
    conversations = [
        ConversationSummary(
            conversation_id=row["id"],
            title=row["title"],
            created_at=row["created_at"],
            last_activity_at=row["updated_at"],
            totals=totals_from_row(row),
        )
        for row in page
    ]
    more = len(rows) > limit
    next_cursor = encode_cursor(Position(at=page[-1]["updated_at"], id=page[-1]["id"])) if more else None
    return ConversationList(conversations=conversations, next_cursor=next_cursor)


async def get_conversation(
    db: Database,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    limit: int = DEFAULT_MESSAGES,
    cursor: str | None = None,
) -> ConversationDetail:
    """One of the caller's conversations with its latest ``limit`` messages, oldest first, read in one snapshot.

    Raises ``ConversationNotFoundError`` when no conversation with this id belongs to ``user_id``, ``InvalidInput``
    for a ``limit`` outside 1 to ``MAX_MESSAGES`` or a cursor this server did not issue.
    """
    _check_limit(limit, MAX_MESSAGES)
    async with db.snapshot() as connection:
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
        conversation_id=conversation["id"],
        title=conversation["title"],
        created_at=conversation["created_at"],
        last_activity_at=conversation["updated_at"],
        totals=totals_from_row(conversation),
        model_distribution=model_shares(conversation["model_distribution"]),
        messages=[
            ConversationMessage(message_id=m["id"], role=m["role"], content=m["content"], created_at=m["created_at"])
            for m in reversed(page)
        ],
        earlier_cursor=encode_cursor(Position(at=page[-1]["created_at"], id=page[-1]["id"])) if earlier else None,
    )


async def recent_history(db: Database, conversation_id: uuid.UUID, user_id: uuid.UUID, *, limit: int) -> History:
    """The latest ``limit`` messages of one of the caller's conversations, and the model of its last reply.

    One statement checks the owner, reads the messages and the model. Raises ``ConversationNotFoundError`` when no
    conversation with this id belongs to ``user_id``.
    """
    rows = await db.fetch(_HISTORY, conversation_id, user_id, limit)
    if not rows:
        raise ConversationNotFoundError(conversation_id)
    return History(
        messages=[(row["role"], row["content"]) for row in rows if row["role"] is not None],
        model=rows[0]["model"],
    )


async def ensure_owned(db: Database, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Raise ``ConversationNotFoundError`` unless a conversation with this id belongs to ``user_id``."""
    if await db.fetchval(_OWNED, conversation_id, user_id) is None:
        raise ConversationNotFoundError(conversation_id)


def _check_limit(limit: int, most: int) -> None:
    if not 1 <= limit <= most:
        raise InvalidInput("limit", f"`limit` must be between 1 and {most}")
