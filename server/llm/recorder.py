"""Writing what a model call produced and cost: one transaction, one statement, idempotent by call id.

The statement inserts the ``ai_usage_logs`` row first (``ON CONFLICT (call_id) DO NOTHING``) and makes everything
else conditional on that insert: the conversation is created or its totals incremented with atomic SQL, and the
messages are stored. A record that is written twice (a replay from the spool after an uncertain failure) therefore
counts once, and concurrent calls on one conversation serialise on its row lock without losing an update.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Final, Literal

import asyncpg
import msgspec
from piccolo.engine.postgres import PostgresEngine

from schemas.chat import ConversationTotals
from server.llm.pricing import PricedUsage
from server.llm.usage import TokenUsage

CallStatus = Literal["ok", "error", "cancelled"]
MetadataValue = str | int | float | bool | None


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    role: Literal["user", "assistant", "system"]
    content: str
    created_at: datetime.datetime


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one provider call leaves in the database; also the spool's file format."""

    call_id: uuid.UUID
    created_at: datetime.datetime
    user_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    conversation_title: str
    procedure: str
    provider: str
    requested_model: str
    model: str
    usage: TokenUsage
    priced: PricedUsage
    latency_ms: int
    status: CallStatus
    error_type: str | None = None
    metadata: dict[str, MetadataValue] = msgspec.field(default_factory=dict)
    messages: tuple[StoredMessage, ...] = ()

    @property
    def message_id(self) -> uuid.UUID | None:
        """The assistant message this call produced, if any."""
        return next((m.id for m in reversed(self.messages) if m.role == "assistant"), None)


_TOTALS: Final = (
    "total_prompt_tokens, total_completion_tokens, total_tokens_used, total_cost_usd, llm_calls, unpriced_calls"
)


def _store_messages(conversation: str, first: int) -> str:
    """Insert the messages passed as four arrays, parameters ``$first`` to ``$first+3``, into ``conversation``."""
    ids, roles, contents, times = (f"${first + i}" for i in range(4))
    return f"""
    INSERT INTO messages (id, conversation, role, content, created_at)
    SELECT m.id, {conversation}::uuid, m.role, m.content, m.created_at
    FROM unnest({ids}::uuid[], {roles}::text[], {contents}::text[], {times}::timestamptz[])
         AS m(id, role, content, created_at)"""


RECORD_CALL: Final = f"""
WITH log AS (
    INSERT INTO ai_usage_logs (
        id, call_id, conversation_id, message_id, user_id, procedure, provider, requested_model, model,
        input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens,
        reasoning_tokens, prompt_tokens, completion_tokens, total_tokens, usage_estimated,
        rate_input, rate_cache_read, rate_cache_write_5m, rate_cache_write_1h, rate_output, price_source, price_tier,
        cost_input, cost_cache_read, cost_cache_write_5m, cost_cache_write_1h, cost_output, estimated_cost_usd,
        pricing_status, latency_ms, status, error_type, metadata, created_at
    ) VALUES (
        $43, $1, $2, $38, $3, $6, $7, $8, $9,
        $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21, $22, $23, $24, $25, $26,
        $27, $28, $29, $30, $31, $32,
        $33, $34, $35, $36, $37::jsonb, $5
    )
    ON CONFLICT (call_id) DO NOTHING
    RETURNING call_id
), conversation AS (
    INSERT INTO conversations AS c (
        id, owner, title, created_at, updated_at, total_prompt_tokens, total_completion_tokens, total_tokens_used,
        total_cost_usd, llm_calls, unpriced_calls, model_distribution
    )
    SELECT $2, $3, $4, $5, $5, $44, $14, $44 + $14, coalesce($32, 0), 1, $45,
           jsonb_build_object($9::text, jsonb_build_object(
               'calls', 1, 'tokens', $44 + $14, 'cost_usd', coalesce($32, 0)::text))
    FROM log
    WHERE $2::uuid IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET
        updated_at = greatest(c.updated_at, excluded.updated_at),
        total_prompt_tokens = c.total_prompt_tokens + excluded.total_prompt_tokens,
        total_completion_tokens = c.total_completion_tokens + excluded.total_completion_tokens,
        total_tokens_used = c.total_tokens_used + excluded.total_tokens_used,
        total_cost_usd = c.total_cost_usd + excluded.total_cost_usd,
        llm_calls = c.llm_calls + 1,
        unpriced_calls = c.unpriced_calls + excluded.unpriced_calls,
        model_distribution = c.model_distribution || jsonb_build_object($9::text, jsonb_build_object(
            'calls', coalesce((c.model_distribution -> $9::text ->> 'calls')::bigint, 0) + 1,
            'tokens', coalesce((c.model_distribution -> $9::text ->> 'tokens')::bigint, 0)
                      + excluded.total_tokens_used,
            'cost_usd', (coalesce((c.model_distribution -> $9::text ->> 'cost_usd')::numeric, 0)
                         + excluded.total_cost_usd)::text))
    RETURNING {_TOTALS}
), stored AS (
    {_store_messages("$2", 39)}
    WHERE $2::uuid IS NOT NULL AND EXISTS (SELECT 1 FROM log)
)
SELECT {_TOTALS} FROM conversation
"""

# With usage logging switched off the conversation and its messages are still kept, but no totals move: the totals
# are by definition the sums over the usage rows.
STORE_MESSAGES_ONLY: Final = f"""
WITH conversation AS (
    INSERT INTO conversations AS c (id, owner, title, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $4)
    ON CONFLICT (id) DO UPDATE SET updated_at = greatest(c.updated_at, excluded.updated_at)
    RETURNING {_TOTALS}
), stored AS (
    {_store_messages("$1", 5)}
    ON CONFLICT (id) DO NOTHING
)
SELECT {_TOTALS} FROM conversation
"""


def _record_arguments(record: UsageRecord) -> tuple[Any, ...]:
    usage, priced = record.usage, record.priced
    rates = priced.rates
    return (
        record.call_id,
        record.conversation_id,
        record.user_id,
        record.conversation_title,
        record.created_at,
        record.procedure,
        record.provider,
        record.requested_model,
        record.model,
        usage.input,
        usage.cache_read,
        usage.cache_write_5m,
        usage.cache_write_1h,
        usage.output,
        usage.reasoning,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.estimated,
        rates.input if rates else None,
        rates.cache_read if rates else None,
        rates.cache_write_5m if rates else None,
        rates.cache_write_1h if rates else None,
        rates.output if rates else None,
        priced.source,
        priced.tier,
        priced.cost_input,
        priced.cost_cache_read,
        priced.cost_cache_write_5m,
        priced.cost_cache_write_1h,
        priced.cost_output,
        priced.total_cost,
        priced.status,
        record.latency_ms,
        record.status,
        record.error_type,
        msgspec.json.encode(record.metadata).decode(),
        record.message_id,
        *_message_columns(record.messages),
        uuid.uuid4(),
        usage.prompt_total,
        1 if priced.status == "unpriced" else 0,
    )


def _message_columns(messages: tuple[StoredMessage, ...]) -> tuple[list[Any], ...]:
    return (
        [m.id for m in messages],
        [m.role for m in messages],
        [m.content for m in messages],
        [m.created_at for m in messages],
    )


def totals_from_row(row: asyncpg.Record) -> ConversationTotals:
    """A conversation's totals from a row holding its ``conversations`` columns."""
    return ConversationTotals(
        total_prompt_tokens=row["total_prompt_tokens"],
        total_completion_tokens=row["total_completion_tokens"],
        total_tokens_used=row["total_tokens_used"],
        total_cost_usd=row["total_cost_usd"],
        llm_calls=row["llm_calls"],
        unpriced_calls=row["unpriced_calls"],
    )


class UsageRecorder:
    """Writes call records in one transaction; ``enabled=False`` keeps conversations and messages only."""

    def __init__(self, engine: PostgresEngine, *, enabled: bool = True) -> None:
        self._engine = engine
        self.enabled = enabled

    async def write(self, record: UsageRecord) -> ConversationTotals | None:
        """Store ``record``; return the conversation's new totals (None outside a conversation or on a replay)."""
        async with self._engine.transaction() as transaction:
            connection = transaction.connection
            if self.enabled:
                row = await connection.fetchrow(RECORD_CALL, *_record_arguments(record))
            elif record.conversation_id is not None and record.messages:
                row = await connection.fetchrow(
                    STORE_MESSAGES_ONLY,
                    record.conversation_id,
                    record.user_id,
                    record.conversation_title,
                    record.created_at,
                    *_message_columns(record.messages),
                )
            else:
                return None
        return None if row is None else totals_from_row(row)
