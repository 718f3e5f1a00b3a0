"""The chat procedures' logic. Every model call goes through ``LLMCore``; nothing here talks to an SDK."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypedDict, TypeVar

import msgspec

from schemas import codec
from schemas.chat import (
    ExecuteActionInput,
    ExecuteActionOutput,
    SendMessageInput,
    SendMessageOutput,
    StreamMessageDelta,
    StreamMessageDone,
    StreamMessageInput,
    SummarizeEmailInput,
    SummarizeEmailOutput,
)
from schemas.money import Money
from schemas.usage import ConversationTotals, PricingStatus, Provider, ReportedTokens, Usage
from server.chat.actions import ACTIONS
from server.conversations import recent_history
from server.database import Database
from server.errors import StreamRequestUsedError
from server.llm.core import Attribution, LLMCore, LLMResult
from server.llm.providers import ChatTurn, CompletionRequest, TextDelta
from server.llm.recorder import MetadataValue
from server.llm.response_cache import CachePolicy, policy_for, requested_policy
from server.llm.structured import ask_structured, object_schema
from server.llm.usage import TokenUsage

logger: Final = logging.getLogger("tollbooth.chat")

HISTORY_LIMIT: Final = 100
"""The most recent messages sent with ``chat.sendMessage``; older ones stay stored but are not sent."""
TITLE_LENGTH: Final = 80
SCHEMA_VERSION: Final = 1

# One round trip, as before replays existed: ``id`` is null when the id was claimed before, and ``response`` then
# holds the finished stream's ``done`` event if it was for the same input (null while it runs, when it failed, or
# for another input). A row claimed by a concurrent statement is not in this statement's snapshot: its response
# reads null, which is right (it is still running).
_CLAIM_STREAM_REQUEST: Final = """
WITH claimed AS (
    INSERT INTO stream_requests (user_id, request_id, request_hash) VALUES ($1, $2, $3)
    ON CONFLICT (user_id, request_id) DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM claimed) AS id,
       (SELECT response FROM stream_requests WHERE user_id = $1 AND request_id = $2 AND request_hash = $3)
       AS response
"""
_STORE_STREAM_RESPONSE: Final = "UPDATE stream_requests SET response = $3 WHERE user_id = $1 AND request_id = $2"
_DONE_ENCODER: Final = codec.encoder()
_DONE_DECODER: Final = codec.decoder(StreamMessageDone)


class _Summary(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    summary: str
    key_points: list[str]
    action_items: list[str]


_SUMMARY_SCHEMA: Final = object_schema(_Summary)
_SUMMARY_DECODER: Final = msgspec.json.Decoder(_Summary)
ResultT = TypeVar("ResultT")


@dataclass(slots=True)
class ChatService:
    """The chat procedures' logic: conversations, structured actions and e-mail summaries over ``LLMCore``.

    Each method takes the caller's user id and the procedure's validated input Struct and returns its output Struct.
    A conversation of another user is ``ConversationNotFoundError`` (NOT_FOUND, so ids leak nothing); a model that
    fails is ``LLMError``; a structured answer that does not validate is asked for once more, and a second invalid
    answer is ``LLMError(INVALID_OUTPUT)`` (both attempts are recorded and costed). ``default_model`` answers calls
    that name no model, except a message in a conversation, which continues on the model of the conversation's last
    reply. Database errors propagate (asyncpg's).
    """

    llm: LLMCore
    db: Database
    default_model: str

    async def send_message(self, user_id: uuid.UUID, data: SendMessageInput) -> SendMessageOutput:
        request, attribution = await self._chat_call(user_id, data, "chat.sendMessage")
        cache = policy_for("chat.sendMessage", requested_policy(data.cache))
        result = await self.llm.invoke(
            request, attribution, store=[("user", data.message)], store_reply=True, cache=cache
        )
        return SendMessageOutput(**_sent_fields(result, attribution))

    async def stream_message(
        self, user_id: uuid.UUID, data: StreamMessageInput
    ) -> AsyncGenerator[StreamMessageDelta | StreamMessageDone, None]:
        """``send_message`` with the reply streamed; only a completed stream stores messages (``LLMCore.stream``).

        It runs at most once per ``data.request_id`` and user: the id is claimed by one committed statement before
        anything else. A request whose id was claimed before (an EventSource reconnect repeats the URL, hence the
        id) with the same input replays a finished stream's reply as one delta and its ``done`` event
        (``fromIdempotentCache``); it is refused with CONFLICT while that stream still runs, when it failed, and for
        another input. The model is not called again.
        """
        request_hash = hashlib.sha256(_DONE_ENCODER.encode(data)).digest()
        claim = await self.db.fetchrow(_CLAIM_STREAM_REQUEST, user_id, data.request_id, request_hash)
        assert claim is not None  # a SELECT without FROM: always one row
        if claim["id"] is None:
            if claim["response"] is None:
                raise StreamRequestUsedError(data.request_id)
            done = _DONE_DECODER.decode(claim["response"])
            yield StreamMessageDelta(text=done.reply)
            yield msgspec.structs.replace(done, from_idempotent_cache=True)
            return
        request, attribution = await self._chat_call(user_id, data, "chat.streamMessage")
        events = self.llm.stream(request, attribution, store=[("user", data.message)], store_reply=True)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    yield StreamMessageDelta(text=event.text)
                else:
                    done = StreamMessageDone(**_sent_fields(event, attribution))
                    # Kept before it is sent, so that a reconnect after it replays it rather than meet CONFLICT; a
                    # failure to keep it only means a repeat meets CONFLICT, as before replays existed.
                    try:
                        await self.db.execute(
                            _STORE_STREAM_RESPONSE, user_id, data.request_id, _DONE_ENCODER.encode(done)
                        )
                    except Exception as error:
                        logger.warning("stream %s not kept for replay (%s)", data.request_id, type(error).__name__)
                    yield done

    async def _chat_call(
        self, user_id: uuid.UUID, data: SendMessageInput | StreamMessageInput, procedure: str
    ) -> tuple[CompletionRequest, Attribution]:
        """The request with the conversation's history (a new conversation when ``data`` names none), and its owner.

        Without ``data.model`` a conversation continues on the model of its last reply, a new one starts on
        ``default_model``.
        """
        history: list[ChatTurn] = []
        model: str | None = None
        if data.conversation_id is None:
            conversation_id, new = uuid.uuid4(), True
        else:
            conversation_id, new = data.conversation_id, False
            history, model = await self._history(data.conversation_id, user_id)
        request = CompletionRequest(
            model=data.model or model or self.default_model,
            messages=(*history, ChatTurn(role="user", content=data.message)),
            system=data.system_prompt,
            max_tokens=data.max_tokens,
            temperature=data.temperature,
        )
        attribution = Attribution(
            user_id=user_id,
            procedure=procedure,
            conversation_id=conversation_id,
            new_conversation=new,
            conversation_title=_title(data.message),
            metadata={"task": "chat", "history_messages": len(history), "schema_version": SCHEMA_VERSION},
        )
        return request, attribution

    async def execute_action(self, user_id: uuid.UUID, data: ExecuteActionInput) -> ExecuteActionOutput:
        action = ACTIONS[data.action]
        results, parsed = await self._structured(
            user_id,
            procedure="chat.executeAction",
            conversation_id=data.conversation_id,
            model=data.model or self.default_model,
            system=action.instructions,
            content=data.text,
            schema=action.json_schema,
            schema_name=action.name,
            decoder=action.decoder,
            metadata={"task": "action", "action": action.name, "schema_version": action.schema_version},
            labels=action.labels,
            cache=requested_policy(data.cache),
        )
        return ExecuteActionOutput(result=parsed, **_call_fields(results, data.conversation_id))

    async def summarize_email(self, user_id: uuid.UUID, data: SummarizeEmailInput) -> SummarizeEmailOutput:
        email = data.email
        headers = "".join(
            f"{name}: {value}\n" for name, value in (("From", email.from_), ("Subject", email.subject)) if value
        )
        results, summary = await self._structured(
            user_id,
            procedure="chat.summarizeEmail",
            conversation_id=data.conversation_id,
            model=data.model or self.default_model,
            system=(
                f"You summarise the e-mail the user gives you in at most {data.max_words} words, list its key points "
                "and the actions it asks of the reader (an empty list when it asks none)."
            ),
            content=f"{headers}\n{email.body}",
            schema=_SUMMARY_SCHEMA,
            schema_name="email_summary",
            decoder=_SUMMARY_DECODER,
            metadata={"task": "summarize_email", "max_words": data.max_words, "schema_version": SCHEMA_VERSION},
            cache=requested_policy(data.cache),
        )
        return SummarizeEmailOutput(
            summary=summary.summary,
            key_points=summary.key_points,
            action_items=summary.action_items,
            **_call_fields(results, data.conversation_id),
        )

    async def _structured(
        self,
        user_id: uuid.UUID,
        *,
        procedure: str,
        conversation_id: uuid.UUID | None,
        model: str,
        system: str,
        content: str,
        schema: Mapping[str, Any],
        schema_name: str,
        decoder: msgspec.json.Decoder[ResultT],
        metadata: Mapping[str, MetadataValue],
        labels: Callable[[ResultT], Mapping[str, MetadataValue]] = lambda _: {},
        cache: CachePolicy | None = None,
    ) -> tuple[list[LLMResult], ResultT]:
        """``ask_structured`` under the procedure's cache policy (the call's own, else the procedure's default)."""
        return await ask_structured(
            self.llm,
            user_id,
            procedure=procedure,
            conversation_id=conversation_id,
            model=model,
            system=system,
            content=content,
            schema=schema,
            schema_name=schema_name,
            decoder=decoder,
            metadata=metadata,
            labels=labels,
            cache=policy_for(procedure, cache),
        )

    async def _history(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> tuple[list[ChatTurn], str | None]:
        """The conversation's turns to send, and the model of its last reply (None if unknown)."""
        history = await recent_history(self.db, conversation_id, user_id, limit=HISTORY_LIMIT)
        # The chat procedures store no system message; were one stored, it is not a turn a provider accepts.
        turns = [ChatTurn(role=role, content=content) for role, content in history.messages if role != "system"]
        return turns, history.model


def _title(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"


def _sent_fields(result: LLMResult, attribution: Attribution) -> _SentReport:
    """The fields of a sent message's output: the stored reply and the call report."""
    assert result.message_id is not None  # store_reply always stores the reply
    return {
        "message_id": result.message_id,
        "reply": result.text,
        **_call_fields([result], attribution.conversation_id),
    }


class _CallReport(TypedDict):
    """The fields every chat output shares (``LLMCallOutput``), typed so that mypy checks them at ``**`` unpacking."""

    model: str
    provider: Provider
    usage: Usage
    cost_usd: Money | None
    pricing_status: PricingStatus
    llm_calls: int
    conversation_id: uuid.UUID | None
    conversation: ConversationTotals | None
    from_cache: bool
    cache_age_seconds: float | None
    saved_usd: Money | None


class _SentReport(_CallReport):
    message_id: uuid.UUID
    reply: str


def _call_fields(results: Sequence[LLMResult], conversation_id: uuid.UUID | None) -> _CallReport:
    """The fields every chat output shares, summed over the calls a procedure made."""
    last = results[-1]
    costs = [result.priced.total_cost for result in results]
    return {
        "model": last.model,
        "provider": last.provider,
        "usage": wire_usage([result.usage for result in results]),
        "cost_usd": None if any(cost is None for cost in costs) else Money(sum(c for c in costs if c is not None)),
        "pricing_status": "unpriced" if any(r.priced.status == "unpriced" for r in results) else "priced",
        "llm_calls": len(results),
        "conversation_id": conversation_id,
        "conversation": last.totals,
        "from_cache": last.from_cache,
        "cache_age_seconds": last.cache_age_seconds,
        "saved_usd": None if last.record.saved_usd is None else Money(last.record.saved_usd),
    }


def wire_usage(usages: Sequence[TokenUsage]) -> Usage:
    """The wire form of one call's usage, or of several calls' summed (``estimated`` if any one was)."""

    def total(field: str) -> int:
        return sum(getattr(usage, field) for usage in usages)

    prompt, output, output_image = sum(usage.prompt_total for usage in usages), total("output"), total("output_image")
    return Usage(
        input=total("input"),
        cache_read=total("cache_read"),
        cache_write_5m=total("cache_write_5m"),
        cache_write_1h=total("cache_write_1h"),
        output=output,
        output_image=output_image,
        reasoning=total("reasoning"),
        prompt=prompt,
        total=prompt + output + output_image,
        reported=ReportedTokens(
            prompt_tokens=total("prompt_tokens"),
            completion_tokens=total("completion_tokens"),
            total_tokens=total("total_tokens"),
        ),
        estimated=any(usage.estimated for usage in usages),
    )
