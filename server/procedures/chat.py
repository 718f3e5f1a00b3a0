"""The ``chat`` namespace. Thin: the logic lives in ``ChatService`` and the ``server.conversations`` repository; the
caller comes from the protocol; another user's conversation is NOT_FOUND, never FORBIDDEN."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from schemas import admin, budgets, chat, conversations
from schemas.admin import MyUsage, MyUsageInput
from schemas.budgets import BudgetList
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
from schemas.conversations import ConversationDetail, ConversationList, GetConversationInput, ListConversationsInput
from server import conversations as repository
from server.admin import queries as usage_queries
from server.budgets import service as budget_service
from server.rpc import CallContext, ProcedureController, implements
from server.services import Services

__all__ = ("ChatController",)


class ChatController(ProcedureController):
    namespace = "chat"

    @implements(chat.SEND_MESSAGE)
    async def send_message(self, ctx: CallContext[Services], input: SendMessageInput) -> SendMessageOutput:
        return await ctx.services.chat.send_message(ctx.user.user_id, input)

    @implements(chat.STREAM_MESSAGE)
    async def stream_message(
        self, ctx: CallContext[Services], input: StreamMessageInput
    ) -> AsyncIterator[StreamMessageDelta | StreamMessageDone]:
        async with contextlib.aclosing(ctx.services.chat.stream_message(ctx.user.user_id, input)) as events:
            async for event in events:
                yield event

    @implements(chat.EXECUTE_ACTION)
    async def execute_action(self, ctx: CallContext[Services], input: ExecuteActionInput) -> ExecuteActionOutput:
        return await ctx.services.chat.execute_action(ctx.user.user_id, input)

    @implements(chat.SUMMARIZE_EMAIL)
    async def summarize_email(self, ctx: CallContext[Services], input: SummarizeEmailInput) -> SummarizeEmailOutput:
        return await ctx.services.chat.summarize_email(ctx.user.user_id, input)

    @implements(conversations.LIST_CONVERSATIONS)
    async def list_conversations(self, ctx: CallContext[Services], input: ListConversationsInput) -> ConversationList:
        return await repository.list_conversations(
            ctx.services.db, ctx.user.user_id, limit=input.limit, cursor=input.cursor
        )

    @implements(conversations.GET_CONVERSATION)
    async def get_conversation(self, ctx: CallContext[Services], input: GetConversationInput) -> ConversationDetail:
        return await repository.get_conversation(
            ctx.services.db, ctx.user.user_id, input.conversation_id, limit=input.limit, cursor=input.cursor
        )

    @implements(budgets.GET_BUDGET_STATUS)
    async def get_budget_status(self, ctx: CallContext[Services], input: None) -> BudgetList:
        return await budget_service.get_budget_status(ctx.services.db, ctx.user.user_id)

    @implements(admin.GET_MY_USAGE)
    async def get_my_usage(self, ctx: CallContext[Services], input: MyUsageInput) -> MyUsage:
        return await usage_queries.get_my_usage(ctx.services.db, ctx.user.user_id, input)
