"""The ``chat`` namespace. Thin: the logic lives in ``ChatService``; the caller comes from the protocol."""

from __future__ import annotations

from schemas import chat
from schemas.chat import (
    ExecuteActionInput,
    ExecuteActionOutput,
    SendMessageInput,
    SendMessageOutput,
    SummarizeEmailInput,
    SummarizeEmailOutput,
)
from server.rpc import CallContext, ProcedureController, implements
from server.services import Services

__all__ = ("ChatController",)


class ChatController(ProcedureController):
    namespace = "chat"

    @implements(chat.SEND_MESSAGE)
    async def send_message(self, ctx: CallContext[Services], input: SendMessageInput) -> SendMessageOutput:
        return await ctx.services.chat.send_message(ctx.user.user_id, input)

    @implements(chat.EXECUTE_ACTION)
    async def execute_action(self, ctx: CallContext[Services], input: ExecuteActionInput) -> ExecuteActionOutput:
        return await ctx.services.chat.execute_action(ctx.user.user_id, input)

    @implements(chat.SUMMARIZE_EMAIL)
    async def summarize_email(self, ctx: CallContext[Services], input: SummarizeEmailInput) -> SummarizeEmailOutput:
        return await ctx.services.chat.summarize_email(ctx.user.user_id, input)
