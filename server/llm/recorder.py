"""Writing what a model call produced and cost: one transaction, one statement, idempotent by call id.

The statement settles the call's claim (``server.llm.ledger``: it deletes the ``llm_call_claims`` row), inserts the
``ai_usage_logs`` row (``ON CONFLICT (call_id) DO NOTHING``) and makes everything
else conditional on that insert: the conversation is created or its totals incremented with atomic SQL, and the
messages are stored. A record that is written twice (a replay from the spool after an uncertain failure) therefore
counts once, and concurrent calls on one conversation serialise on its row lock without losing an update.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from decimal import Decimal
from typing import Final, Literal

import msgspec

from schemas.usage import ConversationTotals, Provider
from server.budgets.admission import APPLICABLE
from server.conversations import totals_from_row
from server.database import Database, NamedStatement
from server.llm.pricing import PricedUsage
from server.llm.usage import TokenUsage

logger: Final = logging.getLogger("tollbooth.budgets")

CallStatus = Literal["ok", "error", "cancelled", "cache_hit"]
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
    provider: Provider
    requested_model: str
    model: str
    usage: TokenUsage
    priced: PricedUsage
    latency_ms: int
    status: CallStatus
    error_type: str | None = None
    metadata: dict[str, MetadataValue] = msgspec.field(default_factory=dict)
    messages: tuple[StoredMessage, ...] = ()
    saved_usd: Decimal | None = None
    """A cache hit's saving: the answering call's usage priced at the rates of the hit's day (None if unpriced)."""
    cached_call_id: uuid.UUID | None = None
    """A cache hit's link to the call that produced the answer."""

    @property
    def message_id(self) -> uuid.UUID | None:
        """The assistant message this call produced, if any."""
        return next((m.id for m in reversed(self.messages) if m.role == "assistant"), None)


_TOTALS: Final = (
    "total_prompt_tokens, total_completion_tokens, total_tokens_used, total_cost_usd, llm_calls, unpriced_calls"
)

# The messages, passed as four arrays, into the conversation ``:conversation_id``.
_STORE_MESSAGES: Final = """
    INSERT INTO messages (id, conversation, role, content, created_at)
    SELECT m.id, :conversation_id::uuid, m.role, m.content, m.created_at
    FROM unnest(:message_ids::uuid[], :message_roles::text[], :message_contents::text[], :message_times::timestamptz[])
         AS m(id, role, content, created_at)"""


class _CallParameters(msgspec.Struct, frozen=True, kw_only=True):
    """The parameters of ``RECORD_CALL``, by placeholder name."""

    row_id: uuid.UUID
    call_id: uuid.UUID
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    user_id: uuid.UUID | None
    conversation_title: str
    created_at: datetime.datetime
    procedure: str
    provider: str
    requested_model: str
    model: str
    input_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    output_image_tokens: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    usage_estimated: bool
    rate_input: Decimal | None
    rate_cache_read: Decimal | None
    rate_cache_write_5m: Decimal | None
    rate_cache_write_1h: Decimal | None
    rate_output: Decimal | None
    rate_output_image: Decimal | None
    price_source: str | None
    price_tier: str | None
    cost_input: Decimal | None
    cost_cache_read: Decimal | None
    cost_cache_write_5m: Decimal | None
    cost_cache_write_1h: Decimal | None
    cost_output: Decimal | None
    cost_output_image: Decimal | None
    estimated_cost_usd: Decimal | None
    pricing_status: str
    latency_ms: int
    status: CallStatus
    error_type: str | None
    metadata: str
    """The metadata as JSON text."""
    saved_usd: Decimal | None
    cached_call_id: uuid.UUID | None
    prompt_total: int
    """All prompt buckets, cached ones included: what the conversation's ``total_prompt_tokens`` grows by."""
    generated_total: int
    """Every generated token, text and image: what the conversation's ``total_completion_tokens`` grows by."""
    unpriced_call: int
    """1 for an unpriced call, else 0: what the conversation's ``unpriced_calls`` grows by."""
    message_ids: list[uuid.UUID]
    message_roles: list[str]
    message_contents: list[str]
    message_times: list[datetime.datetime]


RECORD_CALL: Final = NamedStatement(
    f"""
WITH settled AS (
    DELETE FROM llm_call_claims WHERE call_id = :call_id
    RETURNING reserved_usd, budget_ids, budget_period_starts
), log AS (
    INSERT INTO ai_usage_logs (
        id, call_id, conversation_id, message_id, user_id, procedure, provider, requested_model, model,
        input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens,
        reasoning_tokens, prompt_tokens, completion_tokens, total_tokens, usage_estimated,
        rate_input, rate_cache_read, rate_cache_write_5m, rate_cache_write_1h, rate_output, price_source, price_tier,
        cost_input, cost_cache_read, cost_cache_write_5m, cost_cache_write_1h, cost_output, estimated_cost_usd,
        pricing_status, latency_ms, status, error_type, metadata, created_at, saved_usd, cached_call_id,
        output_image_tokens, rate_output_image, cost_output_image
    ) VALUES (
        :row_id, :call_id, :conversation_id, :message_id, :user_id, :procedure, :provider, :requested_model, :model,
        :input_tokens, :cache_read_tokens, :cache_write_5m_tokens, :cache_write_1h_tokens, :output_tokens,
        :reasoning_tokens, :prompt_tokens, :completion_tokens, :total_tokens, :usage_estimated,
        :rate_input, :rate_cache_read, :rate_cache_write_5m, :rate_cache_write_1h, :rate_output, :price_source,
        :price_tier,
        :cost_input, :cost_cache_read, :cost_cache_write_5m, :cost_cache_write_1h, :cost_output, :estimated_cost_usd,
        :pricing_status, :latency_ms, :status, :error_type, :metadata::jsonb, :created_at, :saved_usd,
        :cached_call_id, :output_image_tokens, :rate_output_image, :cost_output_image
    )
    ON CONFLICT (call_id) DO NOTHING
    RETURNING call_id
), conversation AS (
    INSERT INTO conversations AS c (
        id, owner, title, created_at, updated_at, total_prompt_tokens, total_completion_tokens, total_tokens_used,
        total_cost_usd, llm_calls, unpriced_calls, model_distribution
    )
    SELECT :conversation_id, :user_id, :conversation_title, :created_at, :created_at, :prompt_total,
           :generated_total::bigint, :prompt_total + :generated_total::bigint, coalesce(:estimated_cost_usd, 0), 1,
           :unpriced_call,
           jsonb_build_object(:model::text, jsonb_build_object(
               'calls', 1, 'unpriced', :unpriced_call::int, 'tokens', :prompt_total + :generated_total::bigint,
               'cost_usd', coalesce(:estimated_cost_usd, 0)::text))
    FROM log
    WHERE :conversation_id::uuid IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET
        updated_at = greatest(c.updated_at, excluded.updated_at),
        total_prompt_tokens = c.total_prompt_tokens + excluded.total_prompt_tokens,
        total_completion_tokens = c.total_completion_tokens + excluded.total_completion_tokens,
        total_tokens_used = c.total_tokens_used + excluded.total_tokens_used,
        total_cost_usd = c.total_cost_usd + excluded.total_cost_usd,
        llm_calls = c.llm_calls + 1,
        unpriced_calls = c.unpriced_calls + excluded.unpriced_calls,
        model_distribution = c.model_distribution || jsonb_build_object(:model::text, jsonb_build_object(
            'calls', coalesce((c.model_distribution -> :model::text ->> 'calls')::bigint, 0) + 1,
            'unpriced', coalesce((c.model_distribution -> :model::text ->> 'unpriced')::bigint, 0)
                        + excluded.unpriced_calls,
            'tokens', coalesce((c.model_distribution -> :model::text ->> 'tokens')::bigint, 0)
                      + excluded.total_tokens_used,
            'cost_usd', (coalesce((c.model_distribution -> :model::text ->> 'cost_usd')::numeric, 0)
                         + excluded.total_cost_usd)::text))
    RETURNING {_TOTALS}
), stored AS (
    {_STORE_MESSAGES}
    WHERE :conversation_id::uuid IS NOT NULL AND EXISTS (SELECT 1 FROM log)
), budget_deltas AS (
    -- The call's cost goes to every budget that applies, in the period it began; its reservation is released.
    SELECT b.id AS budget_id, budget_period_start(b.period, :created_at) AS period_start,
           coalesce(:estimated_cost_usd, 0)::numeric AS spent, 0::numeric AS reserved
    FROM budgets b
    WHERE EXISTS (SELECT 1 FROM log) AND {APPLICABLE.format(user=":user_id", conversation=":conversation_id")}
    UNION ALL
    SELECT r.budget_id, r.period_start, 0::numeric, -coalesce(s.reserved_usd, 0)
    FROM settled s, unnest(s.budget_ids, s.budget_period_starts) AS r(budget_id, period_start)
), budget_sums AS (
    SELECT budget_id, period_start, sum(spent) AS spent, sum(reserved) AS reserved
    FROM budget_deltas
    GROUP BY budget_id, period_start
), budgeted AS (
    INSERT INTO budget_periods AS p (budget_id, period_start, spent_usd, reserved_usd)
    SELECT d.budget_id, d.period_start, d.spent, d.reserved
    FROM budget_sums d
    JOIN budgets b ON b.id = d.budget_id
    ORDER BY d.budget_id, d.period_start
    ON CONFLICT (budget_id, period_start) DO UPDATE SET
        spent_usd = p.spent_usd + excluded.spent_usd,
        reserved_usd = p.reserved_usd + excluded.reserved_usd
    RETURNING p.budget_id, p.period_start, p.spent_usd
), alerted AS (
    -- Each threshold the period's spend has reached, once per budget, period and threshold (a unique index): also
    -- after a limit was lowered or a threshold added, and for a limit of 0.
    INSERT INTO budget_alerts (
        id, kind, budget_id, scope, subject_id, period, period_start, threshold, limit_usd, spent_usd
    )
    SELECT gen_random_uuid(), 'threshold', b.id, b.scope, b.subject_id, b.period, r.period_start, t.threshold,
           b.limit_usd, r.spent_usd
    FROM budgeted r
    JOIN budget_sums d ON d.budget_id = r.budget_id AND d.period_start = r.period_start
    JOIN budgets b ON b.id = r.budget_id
    CROSS JOIN LATERAL unnest(b.alert_thresholds) AS t(threshold)
    WHERE d.spent > 0 AND r.spent_usd >= t.threshold * b.limit_usd
    ON CONFLICT DO NOTHING
    RETURNING budget_id, threshold
)
SELECT {", ".join(f"c.{column.strip()}" for column in _TOTALS.split(","))},
       (SELECT array_agg(a.budget_id || ' at ' || a.threshold) FROM alerted a) AS alerts
FROM (SELECT) AS one
LEFT JOIN conversation c ON true
""",
    _CallParameters,
)


class _MessagesParameters(msgspec.Struct, frozen=True, kw_only=True):
    """The parameters of ``STORE_MESSAGES_ONLY``, by placeholder name."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID | None
    conversation_title: str
    created_at: datetime.datetime
    message_ids: list[uuid.UUID]
    message_roles: list[str]
    message_contents: list[str]
    message_times: list[datetime.datetime]


# With usage logging switched off the conversation and its messages are still kept, but no totals move: the totals
# are by definition the sums over the usage rows.
STORE_MESSAGES_ONLY: Final = NamedStatement(
    f"""
WITH conversation AS (
    INSERT INTO conversations AS c (id, owner, title, created_at, updated_at)
    VALUES (:conversation_id, :user_id, :conversation_title, :created_at, :created_at)
    ON CONFLICT (id) DO UPDATE SET updated_at = greatest(c.updated_at, excluded.updated_at)
    RETURNING {_TOTALS}
), stored AS (
    {_STORE_MESSAGES}
    ON CONFLICT (id) DO NOTHING
)
SELECT {_TOTALS} FROM conversation
""",
    _MessagesParameters,
)


def _call_parameters(record: UsageRecord) -> _CallParameters:
    usage, priced = record.usage, record.priced
    rates = priced.rates
    return _CallParameters(
        row_id=uuid.uuid4(),
        call_id=record.call_id,
        conversation_id=record.conversation_id,
        message_id=record.message_id,
        user_id=record.user_id,
        conversation_title=record.conversation_title,
        created_at=record.created_at,
        procedure=record.procedure,
        provider=record.provider,
        requested_model=record.requested_model,
        model=record.model,
        input_tokens=usage.input,
        cache_read_tokens=usage.cache_read,
        cache_write_5m_tokens=usage.cache_write_5m,
        cache_write_1h_tokens=usage.cache_write_1h,
        output_tokens=usage.output,
        reasoning_tokens=usage.reasoning,
        output_image_tokens=usage.output_image,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        usage_estimated=usage.estimated,
        rate_input=rates.input if rates else None,
        rate_cache_read=rates.cache_read if rates else None,
        rate_cache_write_5m=rates.cache_write_5m if rates else None,
        rate_cache_write_1h=rates.cache_write_1h if rates else None,
        rate_output=rates.output if rates else None,
        rate_output_image=rates.output_image if rates else None,
        price_source=priced.source,
        price_tier=priced.tier,
        cost_input=priced.cost_input,
        cost_cache_read=priced.cost_cache_read,
        cost_cache_write_5m=priced.cost_cache_write_5m,
        cost_cache_write_1h=priced.cost_cache_write_1h,
        cost_output=priced.cost_output,
        cost_output_image=priced.cost_output_image,
        estimated_cost_usd=priced.total_cost,
        pricing_status=priced.status,
        latency_ms=record.latency_ms,
        status=record.status,
        error_type=record.error_type,
        metadata=msgspec.json.encode(record.metadata).decode(),
        saved_usd=record.saved_usd,
        cached_call_id=record.cached_call_id,
        prompt_total=usage.prompt_total,
        generated_total=usage.generated_total,
        unpriced_call=1 if priced.status == "unpriced" else 0,
        message_ids=[m.id for m in record.messages],
        message_roles=[m.role for m in record.messages],
        message_contents=[m.content for m in record.messages],
        message_times=[m.created_at for m in record.messages],
    )


def _messages_parameters(record: UsageRecord, conversation_id: uuid.UUID) -> _MessagesParameters:
    return _MessagesParameters(
        conversation_id=conversation_id,
        user_id=record.user_id,
        conversation_title=record.conversation_title,
        created_at=record.created_at,
        message_ids=[m.id for m in record.messages],
        message_roles=[m.role for m in record.messages],
        message_contents=[m.content for m in record.messages],
        message_times=[m.created_at for m in record.messages],
    )


class UsageRecorder:
    """Writes call records in one transaction; ``enabled=False`` keeps conversations and messages only."""

    def __init__(self, db: Database, *, enabled: bool = True) -> None:
        self._db = db
        self.enabled = enabled

    async def write(self, record: UsageRecord) -> ConversationTotals | None:
        """Store ``record``; return the conversation's new totals (None outside a conversation or on a replay)."""
        if self.enabled:
            statement, arguments = RECORD_CALL.sql, RECORD_CALL.arguments(_call_parameters(record))
        elif record.conversation_id is not None and record.messages:
            parameters = _messages_parameters(record, record.conversation_id)
            statement, arguments = STORE_MESSAGES_ONLY.sql, STORE_MESSAGES_ONLY.arguments(parameters)
        else:
            return None
        async with self._db.transaction() as connection:
            row = await connection.fetchrow(statement, *arguments)
        if row is None:
            return None
        if self.enabled and row["alerts"]:
            logger.warning("budget alert: call %s took spend to %s", record.call_id, ", ".join(row["alerts"]))
        return None if row["llm_calls"] is None else totals_from_row(row)
