"""The ``admin`` namespace: what each conversation cost and where the money goes. Every procedure needs an admin
key; the protocol enforces it from the registry (FORBIDDEN for a user key)."""

from __future__ import annotations

from schemas import admin
from schemas.admin import (
    ConversationCost,
    ConversationCostInput,
    TopConversations,
    TopConversationsInput,
    UnpricedCalls,
    UnpricedCallsInput,
    UsageByDateRange,
    UsageByDateRangeInput,
    UsageByModel,
    UsageByModelInput,
    UsageByProcedure,
    UsageByProcedureInput,
)
from server.admin import queries
from server.rpc import CallContext, ProcedureController, implements
from server.services import Services

__all__ = ("AdminController",)


class AdminController(ProcedureController):
    namespace = "admin"

    @implements(admin.GET_CONVERSATION_COST)
    async def get_conversation_cost(self, ctx: CallContext[Services], input: ConversationCostInput) -> ConversationCost:
        return await queries.get_usage_by_conversation(ctx.services.db, input)

    @implements(admin.USAGE_BY_DATE_RANGE)
    async def usage_by_date_range(self, ctx: CallContext[Services], input: UsageByDateRangeInput) -> UsageByDateRange:
        return await queries.get_usage_by_date_range(ctx.services.db, input)

    @implements(admin.USAGE_BY_MODEL)
    async def usage_by_model(self, ctx: CallContext[Services], input: UsageByModelInput) -> UsageByModel:
        return await queries.get_usage_by_model(ctx.services.db, input)

    @implements(admin.USAGE_BY_PROCEDURE)
    async def usage_by_procedure(self, ctx: CallContext[Services], input: UsageByProcedureInput) -> UsageByProcedure:
        return await queries.get_usage_by_procedure(ctx.services.db, input)

    @implements(admin.TOP_CONVERSATIONS_BY_COST)
    async def top_conversations_by_cost(
        self, ctx: CallContext[Services], input: TopConversationsInput
    ) -> TopConversations:
        return await queries.get_top_conversations_by_cost(ctx.services.db, input)

    @implements(admin.UNPRICED_CALLS)
    async def unpriced_calls(self, ctx: CallContext[Services], input: UnpricedCallsInput) -> UnpricedCalls:
        return await queries.get_unpriced_calls(ctx.services.db, input)
