"""The admin reads: costs per conversation, spend over time, by model and by procedure; and the consistency check."""

from server.admin.consistency import ConsistencyReport, RollupDifference, TotalsDifference, check_totals
from server.admin.queries import (
    get_top_conversations_by_cost,
    get_unpriced_calls,
    get_usage_by_conversation,
    get_usage_by_date_range,
    get_usage_by_model,
    get_usage_by_procedure,
)

__all__ = [
    "ConsistencyReport",
    "RollupDifference",
    "TotalsDifference",
    "check_totals",
    "get_top_conversations_by_cost",
    "get_unpriced_calls",
    "get_usage_by_conversation",
    "get_usage_by_date_range",
    "get_usage_by_model",
    "get_usage_by_procedure",
]
