"""Known usage data for the read tests, written through the real write path (``UsageRecorder``) at real prices."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Final

from server.llm.pricing import PriceCatalogue, PricedUsage
from server.llm.recorder import CallStatus, MetadataValue, StoredMessage, UsageRecord, UsageRecorder
from server.llm.usage import TokenUsage
from server.users import create_user
from tests.conftest import app_database

CATALOGUE: Final = PriceCatalogue()
UNPRICED_MODEL: Final = "acme-finetune-v2"


def provider_of(model: str) -> str:
    if model.startswith("claude-"):
        return "anthropic"
    if model.startswith("gemini-"):
        return "gemini"
    return "openai"


def tokens(
    input: int = 1_000,
    *,
    cache_read: int = 0,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
    output: int = 200,
    reasoning: int = 0,
) -> TokenUsage:
    prompt = input + cache_read + cache_write_5m + cache_write_1h
    return TokenUsage(
        input=input,
        cache_read=cache_read,
        cache_write_5m=cache_write_5m,
        cache_write_1h=cache_write_1h,
        output=output,
        reasoning=reasoning,
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=prompt + output,
    )


async def new_user(name: str = "user") -> uuid.UUID:
    return (await create_user(name, allow_duplicate=True)).id


async def record_call(
    *,
    at: datetime,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    model: str = "gpt-4o",
    procedure: str = "chat.sendMessage",
    usage: TokenUsage | None = None,
    status: CallStatus = "ok",
    title: str = "a conversation",
    reply: str | None = "a reply",
    error_type: str | None = None,
    metadata: dict[str, MetadataValue] | None = None,
    priced: PricedUsage | None = None,
) -> UsageRecord:
    """Record one call as ``invoke_llm`` does: priced at ``at``, with a user message and the reply when given; a
    failed call's ``error_type`` defaults to ``RateLimitError``."""
    usage = usage or tokens()
    provider = provider_of(model)
    messages: tuple[StoredMessage, ...] = ()
    if conversation_id is not None and reply is not None:
        messages = (
            StoredMessage(id=uuid.uuid4(), role="user", content=f"question at {at.isoformat()}", created_at=at),
            StoredMessage(id=uuid.uuid4(), role="assistant", content=reply, created_at=at + timedelta(milliseconds=1)),
        )
    record = UsageRecord(
        call_id=uuid.uuid4(),
        created_at=at,
        user_id=user_id,
        conversation_id=conversation_id,
        conversation_title=title,
        procedure=procedure,
        provider=provider,
        requested_model=model,
        model=model,
        usage=usage,
        priced=priced or CATALOGUE.price(provider, model, usage, at),
        latency_ms=120,
        status=status,
        error_type=error_type or ("RateLimitError" if status == "error" else None),
        messages=messages,
        metadata=metadata or {},
    )
    await UsageRecorder(app_database()).write(record)
    return record
