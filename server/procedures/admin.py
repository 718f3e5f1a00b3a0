"""The ``admin`` namespace: what each conversation cost, where the money goes and who spends it, which calls failed,
and the budgets that cap it. Every procedure needs an admin key; the protocol enforces it from the registry
(FORBIDDEN for a user key)."""

from __future__ import annotations

import msgspec

from schemas import admin, budgets, reprice
from schemas.admin import (
    CacheStats,
    CacheStatsInput,
    ConversationCost,
    ConversationCostInput,
    FailedCalls,
    FailedCallsInput,
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
    UsageByUser,
    UsageByUserInput,
)
from schemas.budgets import (
    AlertList,
    Budget,
    BudgetChange,
    BudgetList,
    DeleteBudgetInput,
    ListAlertsInput,
    ListBudgetsInput,
    SetBudgetInput,
)
from schemas.reprice import RepriceRuns, RepriceRunsInput
from server.admin import queries
from server.admin import reprice as reprice_runs
from server.budgets import service as budget_service
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

    @implements(admin.USAGE_BY_USER)
    async def usage_by_user(self, ctx: CallContext[Services], input: UsageByUserInput) -> UsageByUser:
        return await queries.get_usage_by_user(ctx.services.db, input)

    @implements(admin.FAILED_CALLS)
    async def failed_calls(self, ctx: CallContext[Services], input: FailedCallsInput) -> FailedCalls:
        return await queries.get_failed_calls(ctx.services.db, input)

    @implements(admin.CACHE_STATS)
    async def cache_stats(self, ctx: CallContext[Services], input: CacheStatsInput) -> CacheStats:
        return await queries.get_cache_stats(ctx.services.db, input)

    @implements(budgets.SET_BUDGET)
    async def set_budget(self, ctx: CallContext[Services], input: SetBudgetInput) -> BudgetChange:
        return _change(await budget_service.set_budget(ctx.services.db, input))

    @implements(budgets.DELETE_BUDGET)
    async def delete_budget(self, ctx: CallContext[Services], input: DeleteBudgetInput) -> BudgetChange:
        return _change(await budget_service.delete_budget(ctx.services.db, input.budget_id))

    @implements(budgets.LIST_BUDGETS)
    async def list_budgets(self, ctx: CallContext[Services], input: ListBudgetsInput) -> BudgetList:
        return await budget_service.list_budgets(ctx.services.db, input)

    @implements(budgets.LIST_ALERTS)
    async def list_alerts(self, ctx: CallContext[Services], input: ListAlertsInput) -> AlertList:
        return await budget_service.list_alerts(ctx.services.db, input)

    @implements(reprice.REPRICE_RUNS)
    async def reprice_runs(self, ctx: CallContext[Services], input: RepriceRunsInput) -> RepriceRuns:
        return await reprice_runs.list_runs(ctx.services.db, input)


def _change(budget: Budget) -> BudgetChange:
    return BudgetChange(**msgspec.structs.asdict(budget))
