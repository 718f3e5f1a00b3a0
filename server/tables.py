"""The database tables.

Money columns are NUMERIC(38, 18): a single token of the cheapest model costs $0.00000005, and nothing is rounded
when stored, so a conversation's total is the exact sum of its usage rows. ``ai_usage_logs`` refers to conversations,
messages and users by plain UUID columns, not foreign keys, so it can be distributed by conversation and
partitioned by month when one PostgreSQL is no longer enough.
"""

from __future__ import annotations

from decimal import Decimal

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    BigInt,
    Boolean,
    Bytea,
    ForeignKey,
    Integer,
    Numeric,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.defaults.uuid import UUID4
from piccolo.constraints import Unique
from piccolo.table import Table

MONEY_DIGITS = (38, 18)


def _money(*, null: bool) -> Numeric:
    return Numeric(digits=MONEY_DIGITS, null=null, default=None if null else Decimal(0))


def _tokens() -> BigInt:
    return BigInt(default=0, null=False)


class User(Table, tablename="users"):
    id = UUID(primary_key=True, default=UUID4())
    name = Varchar(length=200, null=False)
    is_admin = Boolean(default=False, null=False)
    api_key_hash = Varchar(length=64, unique=True, null=False, index=True)
    created_at = Timestamptz(default=TimestamptzNow(), null=False)


class Conversation(Table, tablename="conversations"):
    id = UUID(primary_key=True, default=UUID4())
    owner = ForeignKey(User, null=False, index=True, on_delete=OnDelete.cascade)
    title = Varchar(length=200, null=False, default="")
    created_at = Timestamptz(default=TimestamptzNow(), null=False)
    updated_at = Timestamptz(default=TimestamptzNow(), null=False, index=True)
    total_prompt_tokens = _tokens()
    total_completion_tokens = _tokens()
    total_tokens_used = _tokens()
    total_cost_usd = _money(null=False)
    llm_calls = Integer(default=0, null=False)
    unpriced_calls = Integer(default=0, null=False)
    model_distribution = JSONB(default={}, null=False)


class Message(Table, tablename="messages"):
    id = UUID(primary_key=True, default=UUID4())
    conversation = ForeignKey(Conversation, null=False, index=True, on_delete=OnDelete.cascade)
    role = Varchar(length=16, null=False)
    content = Text(null=False)
    created_at = Timestamptz(default=TimestamptzNow(), null=False)


class AiUsageLog(Table, tablename="ai_usage_logs"):
    id = UUID(primary_key=True, default=UUID4())
    call_id = UUID(unique=True, null=False)
    conversation_id = UUID(null=True, default=None, index=True)
    message_id = UUID(null=True, default=None)
    user_id = UUID(null=True, default=None, index=True)
    procedure = Varchar(length=100, null=False, index=True)
    provider = Varchar(length=32, null=False)
    requested_model = Varchar(length=200, null=False)
    model = Varchar(length=200, null=False, index=True)
    input_tokens = _tokens()
    cache_read_tokens = _tokens()
    cache_write_5m_tokens = _tokens()
    cache_write_1h_tokens = _tokens()
    output_tokens = _tokens()
    reasoning_tokens = _tokens()
    prompt_tokens = _tokens()
    completion_tokens = _tokens()
    total_tokens = _tokens()
    usage_estimated = Boolean(default=False, null=False)
    rate_input = _money(null=True)
    rate_cache_read = _money(null=True)
    rate_cache_write_5m = _money(null=True)
    rate_cache_write_1h = _money(null=True)
    rate_output = _money(null=True)
    price_source = Varchar(length=200, null=True, default=None)
    price_tier = Varchar(length=100, null=True, default=None)
    cost_input = _money(null=True)
    cost_cache_read = _money(null=True)
    cost_cache_write_5m = _money(null=True)
    cost_cache_write_1h = _money(null=True)
    cost_output = _money(null=True)
    estimated_cost_usd = _money(null=True)
    pricing_status = Varchar(length=16, null=False)
    latency_ms = Integer(default=0, null=False)
    status = Varchar(length=16, null=False)
    error_type = Varchar(length=100, null=True, default=None)
    metadata = JSONB(default={}, null=False)
    created_at = Timestamptz(default=TimestamptzNow(), null=False, index=True)
    # A cache hit's saving (its answering call's usage priced at the hit's rates) and that call.
    saved_usd = _money(null=True)
    cached_call_id = UUID(null=True, default=None)
    # Generated image tokens (the images API), disjoint from output_tokens, and their rate and cost.
    output_image_tokens = _tokens()
    rate_output_image = _money(null=True)
    cost_output_image = _money(null=True)


class StreamRequest(Table, tablename="stream_requests"):
    """The ``requestId`` of every ``chat.streamMessage`` a user has started: a row is claimed before the model is
    called, so a request that repeats one (an EventSource reconnecting) is refused instead of billed again.

    Scoped per user (unique on ``user_id, request_id``): one user's ids never block another's. Rows are kept (about
    200 bytes with the indexes, a fraction of the stream's usage row); old ones may be deleted once no client can
    still be reconnecting with them (README, "Streaming").
    """

    id = UUID(primary_key=True, default=UUID4())
    # No default (a UUID column's is a random one): a claim names both.
    user_id = UUID(null=False, default=None)
    request_id = UUID(null=False, default=None)
    created_at = Timestamptz(default=TimestamptzNow(), null=False)
    request_hash = Bytea(null=True, default=None)
    """SHA-256 of the input: only a repeat of the same input is replayed."""
    response = Bytea(null=True, default=None)
    """The finished stream's ``done`` event (JSON), replayed to a repeat of its ``requestId`` and input."""
    stream_requests_user_id_request_id_key = Unique([user_id, request_id])


class CallClaim(Table, tablename="llm_call_claims"):
    """A model call about to be sent: the write-ahead half of the call ledger (``server.llm.ledger``).

    A claim is committed before the provider request leaves the process and deleted by the transaction that writes
    the call's ``ai_usage_logs`` row, so every request sent has exactly one of the two at any moment. A claim whose
    ``lease_expires_at`` has passed belongs to a process that died: the sweeper settles it as ``interrupted``, with
    usage estimated from ``prompt_tokens_estimate`` and ``max_output_tokens``. ``conversation_id`` is set only for
    a conversation that existed when the call began (a new one is created by the call's record, never by a claim).
    """

    call_id = UUID(primary_key=True, default=None)
    user_id = UUID(null=True, default=None)
    conversation_id = UUID(null=True, default=None)
    procedure = Varchar(length=100, null=False)
    provider = Varchar(length=32, null=False)
    requested_model = Varchar(length=200, null=False)
    prompt_tokens_estimate = _tokens()
    max_output_tokens = Integer(null=True, default=None)
    reserved_usd = _money(null=True)
    # The hard budgets' periods the reservation was taken from (same order), released when the claim is settled.
    budget_ids = Array(UUID(), default=list, null=False)
    budget_period_starts = Array(Timestamptz(), default=list, null=False)
    metadata = JSONB(default={}, null=False)
    created_at = Timestamptz(default=TimestamptzNow(), null=False)
    lease_expires_at = Timestamptz(null=False, index=True)
