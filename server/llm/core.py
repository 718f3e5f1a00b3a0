"""``invoke_llm``: the one way a procedure calls a model.

Route by model name, call the provider through its official SDK, normalise the usage, price it at the rates in force
at call time, and record reply, usage row and conversation totals in one transaction. A failed provider call is
recorded too (status ``error``); a database failure never fails the caller's request: the record goes to the spool
and is replayed later.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from schemas.chat import ConversationTotals
from server.llm.errors import LLMError
from server.llm.pricing import PriceCatalogue, PricedUsage
from server.llm.providers import Completion, CompletionRequest, ProviderName, ProviderSet, provider_for_model
from server.llm.recorder import CallStatus, MetadataValue, StoredMessage, UsageRecord, UsageRecorder
from server.llm.spool import UsageSpool
from server.llm.usage import TokenUsage, estimate_usage

logger = logging.getLogger("tollbooth.llm")

DATABASE_WRITE_TIMEOUT: Final = 5.0
_NO_USAGE: Final = TokenUsage(
    input=0,
    cache_read=0,
    cache_write_5m=0,
    cache_write_1h=0,
    output=0,
    reasoning=0,
    prompt_tokens=0,
    completion_tokens=0,
    total_tokens=0,
)


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who and what a call is for. ``metadata`` describes the task; it never holds message content.

    With ``new_conversation`` the conversation ``conversation_id`` is created, titled ``conversation_title``, by the
    call's record; a failed call then creates nothing.
    """

    user_id: uuid.UUID
    procedure: str
    conversation_id: uuid.UUID | None = None
    new_conversation: bool = False
    conversation_title: str = ""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LLMResult:
    """A call's reply, what was recorded of it, and the conversation's totals after it."""

    text: str
    record: UsageRecord
    totals: ConversationTotals | None
    """None outside a conversation, or when the record was spooled."""
    recorded: bool
    """False when the database write failed and the record waits in the spool."""

    @property
    def call_id(self) -> uuid.UUID:
        return self.record.call_id

    @property
    def provider(self) -> str:
        return self.record.provider

    @property
    def model(self) -> str:
        return self.record.model

    @property
    def usage(self) -> TokenUsage:
        return self.record.usage

    @property
    def priced(self) -> PricedUsage:
        return self.record.priced

    @property
    def message_id(self) -> uuid.UUID | None:
        return self.record.message_id


class LLMCore:
    def __init__(
        self,
        providers: ProviderSet,
        catalogue: PriceCatalogue,
        recorder: UsageRecorder,
        spool: UsageSpool,
        *,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self.providers = providers
        self.catalogue = catalogue
        self.recorder = recorder
        self.spool = spool
        self._clock = clock

    async def invoke(
        self,
        request: CompletionRequest,
        attribution: Attribution,
        *,
        store: Sequence[tuple[Literal["user", "system"], str]] = (),
        store_reply: bool = False,
        annotate: Callable[[str], Mapping[str, MetadataValue]] | None = None,
    ) -> LLMResult:
        """Call the model and record the call. ``store`` are messages to keep with the reply (``store_reply``).

        ``annotate`` sees the reply before it is recorded and returns labels to add to the record's metadata (whether
        a structured answer was valid, the intent it found): labels, never content.
        Raises ``LLMError`` for a provider failure, after recording it.
        """
        provider = provider_for_model(request.model)
        adapter = self.providers.adapter(provider)
        call_id = uuid.uuid4()
        started_at = self._clock()
        started = time.perf_counter()
        try:
            completion = await adapter.complete(request)
        except LLMError as error:
            await self._record_failure(
                call_id, provider, request, attribution, started_at, started, "error", error.error_type, _NO_USAGE
            )
            raise
        except asyncio.CancelledError:
            # The caller went away mid-call: the provider may still bill the prompt, so keep an estimate.
            prompt_chars = sum(len(turn.content) for turn in request.messages) + len(request.system_prompt() or "")
            estimate = estimate_usage(prompt_chars, 0)
            await asyncio.shield(
                self._record_failure(
                    call_id, provider, request, attribution, started_at, started, "cancelled", "Cancelled", estimate
                )
            )
            raise
        latency_ms = round((time.perf_counter() - started) * 1000)
        priced = self.catalogue.price(
            provider, completion.model, completion.usage, started_at, service_tier=completion.service_tier
        )
        metadata = dict(attribution.metadata)
        if annotate is not None:
            metadata.update(annotate(completion.text))
        finished_at = self._clock()
        messages = _messages(store, completion if store_reply else None, started_at, finished_at)
        record = UsageRecord(
            call_id=call_id,
            created_at=started_at,
            user_id=attribution.user_id,
            conversation_id=attribution.conversation_id,
            conversation_title=attribution.conversation_title,
            procedure=attribution.procedure,
            provider=provider,
            requested_model=request.model,
            model=completion.model,
            usage=completion.usage,
            priced=priced,
            latency_ms=latency_ms,
            status="ok",
            metadata=metadata,
            messages=messages,
        )
        totals, recorded = await self._persist(record)
        return LLMResult(text=completion.text, record=record, totals=totals, recorded=recorded)

    async def _record_failure(
        self,
        call_id: uuid.UUID,
        provider: ProviderName,
        request: CompletionRequest,
        attribution: Attribution,
        started_at: datetime.datetime,
        started: float,
        status: CallStatus,
        error_type: str,
        usage: TokenUsage,
    ) -> None:
        """Record a call that produced no answer. No messages are stored and no conversation is created."""
        conversation_id = None if attribution.new_conversation else attribution.conversation_id
        record = UsageRecord(
            call_id=call_id,
            created_at=started_at,
            user_id=attribution.user_id,
            conversation_id=conversation_id,
            conversation_title="",
            procedure=attribution.procedure,
            provider=provider,
            requested_model=request.model,
            model=request.model,
            usage=usage,
            priced=self.catalogue.price(provider, request.model, usage, started_at),
            latency_ms=round((time.perf_counter() - started) * 1000),
            status=status,
            error_type=error_type,
            metadata=dict(attribution.metadata),
        )
        await self._persist(record)

    async def _persist(self, record: UsageRecord) -> tuple[ConversationTotals | None, bool]:
        try:
            async with asyncio.timeout(DATABASE_WRITE_TIMEOUT):
                return await self.recorder.write(record), True
        except Exception:
            logger.exception("usage record %s could not be written; spooling it for replay", record.call_id)
            await asyncio.to_thread(self.spool.put, record)
            return None, False


def _messages(
    store: Sequence[tuple[Literal["user", "system"], str]],
    completion: Completion | None,
    started_at: datetime.datetime,
    finished_at: datetime.datetime,
) -> tuple[StoredMessage, ...]:
    stored = [
        StoredMessage(id=uuid.uuid4(), role=role, content=content, created_at=started_at) for role, content in store
    ]
    if completion is not None:
        # The reply is stamped after the prompt even on a coarse clock, so history reads back in order.
        reply_at = max(finished_at, started_at + datetime.timedelta(microseconds=1))
        stored.append(StoredMessage(id=uuid.uuid4(), role="assistant", content=completion.text, created_at=reply_at))
    return tuple(stored)
