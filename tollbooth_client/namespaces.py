"""The client's namespaces, one class per procedure namespace, one line per procedure.

Adding a procedure: one line here (``name_in_snake_case = query(module.PROCEDURE)``). Adding a namespace: a class
here and an attribute in ``TollboothClient.__init__``.
"""

from __future__ import annotations

from schemas import admin, budgets, chat, conversations, personas, reprice, system
from tollbooth_client.procedures import Namespace, mutation, query, subscription

__all__ = ("AdminNamespace", "ChatNamespace", "PersonasNamespace", "SystemNamespace")


class SystemNamespace(Namespace):
    namespace = "system"

    health = query(system.HEALTH)
    whoami = query(system.WHOAMI)
    clock = subscription(system.CLOCK)


class ChatNamespace(Namespace):
    namespace = "chat"

    send_message = mutation(chat.SEND_MESSAGE)
    stream_message = subscription(chat.STREAM_MESSAGE)  # StreamMessageInput(request_id=uuid4(), ...): runs once per id
    execute_action = mutation(chat.EXECUTE_ACTION)
    summarize_email = mutation(chat.SUMMARIZE_EMAIL)
    list_conversations = query(conversations.LIST_CONVERSATIONS)
    get_conversation = query(conversations.GET_CONVERSATION)
    get_budget_status = query(budgets.GET_BUDGET_STATUS)
    get_my_usage = query(admin.GET_MY_USAGE)


class PersonasNamespace(Namespace):
    namespace = "personas"

    generate = mutation(personas.GENERATE)


class AdminNamespace(Namespace):
    namespace = "admin"

    get_conversation_cost = query(admin.GET_CONVERSATION_COST)
    usage_by_date_range = query(admin.USAGE_BY_DATE_RANGE)
    usage_by_model = query(admin.USAGE_BY_MODEL)
    usage_by_procedure = query(admin.USAGE_BY_PROCEDURE)
    top_conversations_by_cost = query(admin.TOP_CONVERSATIONS_BY_COST)
    unpriced_calls = query(admin.UNPRICED_CALLS)
    usage_by_user = query(admin.USAGE_BY_USER)
    failed_calls = query(admin.FAILED_CALLS)
    cache_stats = query(admin.CACHE_STATS)
    set_budget = mutation(budgets.SET_BUDGET)
    delete_budget = mutation(budgets.DELETE_BUDGET)
    list_budgets = query(budgets.LIST_BUDGETS)
    list_alerts = query(budgets.LIST_ALERTS)
    reprice_runs = query(reprice.REPRICE_RUNS)
