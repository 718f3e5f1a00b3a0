"""Wire types of the chat procedures. Money is a decimal string on the wire; ids are UUID strings."""

from __future__ import annotations

import uuid
from typing import Annotated, Final, Literal

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.cache import CacheAgeSeconds, CacheOptions, FromCache, SavedUsd
from schemas.idempotency import FromIdempotentCache, IdempotencyKey
from schemas.money import Money
from schemas.registry import Access, mutation, one_of, subscription
from schemas.usage import ConversationTotals, ModelName, PricingStatus, Provider, Usage

MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=65_536)]
Temperature = Annotated[float, msgspec.Meta(ge=0.0, le=2.0)]


class LLMCallOutput(WireOutput, frozen=True, kw_only=True):
    """What every chat procedure reports about the model calls it made.

    ``costUsd`` is null when a model has no known price (``pricingStatus: "unpriced"``): unknown is not free.
    ``conversation`` holds the new totals; it is null outside a conversation, and when the usage record could not be
    written at once (it is kept and written later, so the totals will include it).
    """

    model: str
    provider: Provider
    usage: Usage
    cost_usd: Money | None
    pricing_status: PricingStatus
    llm_calls: int = 1
    conversation_id: uuid.UUID | None = None
    conversation: ConversationTotals | None = None
    from_idempotent_cache: FromIdempotentCache = False
    from_cache: FromCache = False
    cache_age_seconds: CacheAgeSeconds = None
    saved_usd: SavedUsd = None


class SendMessageInput(WireInput, frozen=True, kw_only=True):
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    conversation_id: uuid.UUID | None = None
    model: ModelName | None = None
    system_prompt: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    idempotency_key: IdempotencyKey | None = None
    cache: CacheOptions | None = None


STREAM_MESSAGE_MAX_LENGTH: Final = 4_000
STREAM_SYSTEM_PROMPT_MAX_LENGTH: Final = 1_000
_IN_THE_URL: Final = (
    "A subscription's input travels in the URL, as percent-encoded JSON: up to 12 bytes a character (4-byte UTF-8). "
    f"At {STREAM_MESSAGE_MAX_LENGTH:,} characters of message and {STREAM_SYSTEM_PROMPT_MAX_LENGTH:,} of systemPrompt, "
    "any input fits in the server's 64 KB limit on a URL (beyond it the HTTP server answers a plain-text 400, not a "
    "tRPC error), and typical English text (about 1.4 bytes a character) in the 8 KB of nginx's and Apache's "
    "defaults. Longer: chat.sendMessage."
)


class StreamMessageInput(WireInput, frozen=True, kw_only=True):
    """chat.sendMessage's input for chat.streamMessage: a ``requestId`` more, and shorter texts (they go in the URL).

    The server runs one stream per ``requestId`` and user: it claims the id before calling the model, and answers any
    later request with the same id CONFLICT without calling it. An EventSource that reconnects repeats the URL, hence
    the id, so a dropped connection can never send, and bill, the message a second time.
    """

    request_id: Annotated[
        uuid.UUID,
        msgspec.Meta(
            description="A new UUID for each message the client means to send (crypto.randomUUID(), uuid.uuid4()); "
            "send the same message again with a new one."
        ),
    ]
    message: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=STREAM_MESSAGE_MAX_LENGTH,
            description=f"At most {STREAM_MESSAGE_MAX_LENGTH:,} characters. {_IN_THE_URL}",
        ),
    ]
    conversation_id: uuid.UUID | None = None
    model: ModelName | None = None
    system_prompt: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=STREAM_SYSTEM_PROMPT_MAX_LENGTH,
                description=f"At most {STREAM_SYSTEM_PROMPT_MAX_LENGTH:,} characters, like message: it is in the URL.",
            ),
        ]
        | None
    ) = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None


class SendMessageOutput(LLMCallOutput, frozen=True, kw_only=True):
    message_id: uuid.UUID
    reply: str


class StreamMessageDelta(WireOutput, frozen=True, kw_only=True, tag="delta", tag_field="type"):
    """The next piece of the reply; the pieces joined, in order, are the reply."""

    text: str


class StreamMessageDone(SendMessageOutput, frozen=True, kw_only=True, tag="done", tag_field="type"):
    """The last event: what ``chat.sendMessage`` returns, once the reply and its usage are recorded."""


ActionName = Literal["draft_reply", "extract_tasks", "classify_intent"]


class ExecuteActionInput(WireInput, frozen=True, kw_only=True):
    action: ActionName
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=50_000, description="The text to act on.")]
    conversation_id: uuid.UUID | None = None
    model: ModelName | None = None
    idempotency_key: IdempotencyKey | None = None
    cache: CacheOptions | None = None


class DraftReplyResult(WireOutput, frozen=True, kw_only=True, tag="draft_reply", tag_field="type"):
    subject: str | None
    body: str
    tone: Literal["formal", "neutral", "friendly"]


class ExtractedTask(WireOutput, frozen=True, kw_only=True):
    title: str
    owner: str | None
    due: str | None
    priority: Literal["low", "medium", "high"]


class ExtractTasksResult(WireOutput, frozen=True, kw_only=True, tag="extract_tasks", tag_field="type"):
    tasks: list[ExtractedTask]


class ClassifyIntentResult(WireOutput, frozen=True, kw_only=True, tag="classify_intent", tag_field="type"):
    intent: Literal["question", "request", "complaint", "feedback", "scheduling", "other"]
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    rationale: str


ActionResult = DraftReplyResult | ExtractTasksResult | ClassifyIntentResult


class ExecuteActionOutput(LLMCallOutput, frozen=True, kw_only=True):
    result: ActionResult


class Email(WireInput, frozen=True, kw_only=True):
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]
    subject: Annotated[str, msgspec.Meta(max_length=1_000)] | None = None
    from_: Annotated[str, msgspec.Meta(max_length=500)] | None = msgspec.field(default=None, name="from")


class SummarizeEmailInput(WireInput, frozen=True, kw_only=True):
    email: Email
    max_words: Annotated[int, msgspec.Meta(ge=10, le=1_000)] = 120
    conversation_id: uuid.UUID | None = None
    model: ModelName | None = None
    idempotency_key: IdempotencyKey | None = None
    cache: CacheOptions | None = None


class SummarizeEmailOutput(LLMCallOutput, frozen=True, kw_only=True):
    summary: str
    key_points: list[str]
    action_items: list[str]


SEND_MESSAGE: Final = mutation(
    "chat.sendMessage",
    SendMessageInput,
    SendMessageOutput,
    Access.USER,
    "Send a message in a conversation (a new one when conversationId is absent) and get the model's reply, what "
    "the call cost and the conversation's new totals.",
)
STREAM_MESSAGE: Final = subscription(
    "chat.streamMessage",
    StreamMessageInput,
    one_of(StreamMessageDelta, StreamMessageDone),
    Access.USER,
    "chat.sendMessage with the reply streamed: `delta` events (`text`), then one `done` event carrying what "
    "chat.sendMessage returns. It runs at most once per `requestId` (a new UUID per message) and user: the server "
    "claims the id before calling the model, and any later request with it (a second subscribe, an EventSource "
    "reconnecting after a dropped connection) ends with CONFLICT, without calling or billing the model again. No "
    "error it reports is one @trpc/client reconnects on (a timeout is TIMEOUT; other provider and server failures are "
    "UNPROCESSABLE_CONTENT, the cause in the message), so the caller sees the cause, not the CONFLICT of a retry. "
    "A stream that breaks off or is abandoned stores no message and creates no conversation; its estimated usage is "
    "recorded and counts in an existing conversation's totals. As its input travels in the URL, `message` holds at "
    f"most {STREAM_MESSAGE_MAX_LENGTH:,} characters and `systemPrompt` {STREAM_SYSTEM_PROMPT_MAX_LENGTH:,}; send "
    "longer ones with chat.sendMessage.",
)
EXECUTE_ACTION: Final = mutation(
    "chat.executeAction",
    ExecuteActionInput,
    ExecuteActionOutput,
    Access.USER,
    "Run an action (draft_reply, extract_tasks, classify_intent) on a text and get its typed result and cost.",
)
SUMMARIZE_EMAIL: Final = mutation(
    "chat.summarizeEmail",
    SummarizeEmailInput,
    SummarizeEmailOutput,
    Access.USER,
    "Summarise an e-mail into a summary, key points and action items, with what the call cost.",
)
