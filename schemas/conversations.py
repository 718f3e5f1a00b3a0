"""Wire types of the user-facing conversation reads: ``chat.listConversations`` and ``chat.getConversation``.

Both return only the caller's own conversations. Pages are keyset cursors rather than offsets, so a page costs the
same however deep it is, and a conversation that moves to the top while someone pages is not shown twice in a row.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.registry import Access, query
from schemas.usage import ConversationTotals, ModelShare
from schemas.validation import Cursor, decode_cursor

__all__ = (
    "GET_CONVERSATION",
    "LIST_CONVERSATIONS",
    "ConversationDetail",
    "ConversationList",
    "ConversationMessage",
    "ConversationSummary",
    "GetConversationInput",
    "ListConversationsInput",
)


class ListConversationsInput(WireInput, frozen=True, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        if self.cursor is not None:
            decode_cursor(self.cursor)


class ConversationSummary(WireOutput, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    title: str
    created_at: datetime
    last_activity_at: datetime
    totals: ConversationTotals


class ConversationList(WireOutput, frozen=True, kw_only=True):
    """The caller's conversations, most recent activity first; ``nextCursor`` is null on the last page."""

    conversations: list[ConversationSummary]
    next_cursor: str | None


class GetConversationInput(WireInput, frozen=True, kw_only=True):
    """``limit`` bounds the messages returned (the most recent ones); ``cursor`` (an ``earlierCursor``) fetches the
    ones before them."""

    conversation_id: uuid.UUID
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        if self.cursor is not None:
            decode_cursor(self.cursor)


class ConversationMessage(WireOutput, frozen=True, kw_only=True):
    message_id: uuid.UUID
    role: Literal["user", "assistant", "system"]
    content: str
    created_at: datetime


class ConversationDetail(WireOutput, frozen=True, kw_only=True):
    """A conversation with its messages oldest first; ``earlierCursor`` is null when no older message remains."""

    conversation_id: uuid.UUID
    title: str
    created_at: datetime
    last_activity_at: datetime
    totals: ConversationTotals
    model_distribution: list[ModelShare]
    messages: list[ConversationMessage]
    earlier_cursor: str | None


LIST_CONVERSATIONS = query(
    "chat.listConversations",
    ListConversationsInput,
    ConversationList,
    Access.USER,
    "The caller's conversations with their totals, most recent activity first, paged by cursor.",
)
GET_CONVERSATION = query(
    "chat.getConversation",
    GetConversationInput,
    ConversationDetail,
    Access.USER,
    "One of the caller's conversations: its messages in order and its totals; NOT_FOUND for any other.",
)
