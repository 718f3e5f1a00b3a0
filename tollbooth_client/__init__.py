"""The typed async Python client of Tollbooth: one import for the client and every type it sends and receives.

::

    import asyncio
    import os

    from tollbooth_client import ClockInput, TollboothClient


    async def main() -> None:
        url = os.environ.get("TOLLBOOTH_URL", "http://127.0.0.1:8000")
        async with TollboothClient(url, api_key=os.environ["TOLLBOOTH_API_KEY"]) as client:
            health = await client.system.health()  # HealthOutput
            print(health.status, health.version)
            async with client.system.clock(ClockInput(count=3, interval_ms=100)) as events:
                async for event in events:  # ClockEvent
                    print(event.seq, event.at)


    asyncio.run(main())

Every failed call raises ``TRPCClientError`` (code, JSON-RPC code, HTTP status, path, message). The wire types are
the msgspec Structs of ``schemas``, the contract the server is built from, re-exported here: every input, output and
event of every procedure, the Structs nested in them, ``Money`` and ``ErrorCode``. The package ships ``py.typed``.
"""

from __future__ import annotations

from schemas.admin import (
    BucketCosts,
    BucketRates,
    CacheFigures,
    CacheStats,
    CacheStatsInput,
    ConversationCost,
    ConversationCostInput,
    DailyCacheStats,
    DateBucket,
    ErrorTypeCount,
    FailedCalls,
    FailedCallsInput,
    ModelUsage,
    MyUsage,
    MyUsageInput,
    ProcedureCacheStats,
    ProcedureUsage,
    TopConversation,
    TopConversations,
    TopConversationsInput,
    UnpricedCalls,
    UnpricedCallsInput,
    UnpricedModel,
    UsageByDateRange,
    UsageByDateRangeInput,
    UsageByModel,
    UsageByModelInput,
    UsageByProcedure,
    UsageByProcedureInput,
    UsageByUser,
    UsageByUserInput,
    UsageFigures,
    UsageRow,
    UserUsage,
)
from schemas.budgets import (
    AlertList,
    AlertRecord,
    Budget,
    BudgetAlert,
    BudgetChange,
    BudgetList,
    DeleteBudgetInput,
    ListAlertsInput,
    ListBudgetsInput,
    SetBudgetInput,
)
from schemas.cache import CacheOptions
from schemas.chat import (
    ActionResult,
    ClassifyIntentResult,
    DraftReplyResult,
    Email,
    ExecuteActionInput,
    ExecuteActionOutput,
    ExtractedTask,
    ExtractTasksResult,
    LLMCallOutput,
    SendMessageInput,
    SendMessageOutput,
    StreamMessageDelta,
    StreamMessageDone,
    StreamMessageInput,
    SummarizeEmailInput,
    SummarizeEmailOutput,
)
from schemas.conversations import (
    ConversationDetail,
    ConversationList,
    ConversationMessage,
    ConversationSummary,
    GetConversationInput,
    ListConversationsInput,
)
from schemas.errors import ErrorCode
from schemas.money import Money
from schemas.personas import (
    GeneratePersonasInput,
    GeneratePersonasOutput,
    Persona,
    PersonaCallReport,
    PersonaConfig,
    PersonaCostReport,
)
from schemas.reprice import RepriceModelFigures, RepriceRun, RepriceRuns, RepriceRunsInput
from schemas.system import ClockEvent, ClockInput, HealthOutput, WhoAmIOutput
from schemas.usage import ConversationTotals, ModelShare, ReportedTokens, TokenCounts, Usage
from tollbooth_client.client import TollboothClient
from tollbooth_client.errors import TRPCClientError
from tollbooth_client.procedures import Namespace, mutation, query, subscription
from tollbooth_client.subscription import Subscription

__all__ = (
    "ActionResult",
    "AlertList",
    "AlertRecord",
    "BucketCosts",
    "BucketRates",
    "Budget",
    "BudgetAlert",
    "BudgetChange",
    "BudgetList",
    "CacheFigures",
    "CacheOptions",
    "CacheStats",
    "CacheStatsInput",
    "ClassifyIntentResult",
    "ClockEvent",
    "ClockInput",
    "ConversationCost",
    "ConversationCostInput",
    "ConversationDetail",
    "ConversationList",
    "ConversationMessage",
    "ConversationSummary",
    "ConversationTotals",
    "DailyCacheStats",
    "DateBucket",
    "DeleteBudgetInput",
    "DraftReplyResult",
    "Email",
    "ErrorCode",
    "ErrorTypeCount",
    "ExecuteActionInput",
    "ExecuteActionOutput",
    "ExtractTasksResult",
    "ExtractedTask",
    "FailedCalls",
    "FailedCallsInput",
    "GeneratePersonasInput",
    "GeneratePersonasOutput",
    "GetConversationInput",
    "HealthOutput",
    "LLMCallOutput",
    "ListAlertsInput",
    "ListBudgetsInput",
    "ListConversationsInput",
    "ModelShare",
    "ModelUsage",
    "Money",
    "MyUsage",
    "MyUsageInput",
    "Namespace",
    "Persona",
    "PersonaCallReport",
    "PersonaConfig",
    "PersonaCostReport",
    "ProcedureCacheStats",
    "ProcedureUsage",
    "ReportedTokens",
    "RepriceModelFigures",
    "RepriceRun",
    "RepriceRuns",
    "RepriceRunsInput",
    "SendMessageInput",
    "SendMessageOutput",
    "SetBudgetInput",
    "StreamMessageDelta",
    "StreamMessageDone",
    "StreamMessageInput",
    "Subscription",
    "SummarizeEmailInput",
    "SummarizeEmailOutput",
    "TRPCClientError",
    "TokenCounts",
    "TollboothClient",
    "TopConversation",
    "TopConversations",
    "TopConversationsInput",
    "UnpricedCalls",
    "UnpricedCallsInput",
    "UnpricedModel",
    "Usage",
    "UsageByDateRange",
    "UsageByDateRangeInput",
    "UsageByModel",
    "UsageByModelInput",
    "UsageByProcedure",
    "UsageByProcedureInput",
    "UsageByUser",
    "UsageByUserInput",
    "UsageFigures",
    "UsageRow",
    "UserUsage",
    "WhoAmIOutput",
    "mutation",
    "query",
    "subscription",
)
