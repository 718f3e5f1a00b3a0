"""The application's contract: every procedure the server implements and the clients can call."""

from __future__ import annotations

from typing import Final

from schemas import admin, budgets, chat, conversations, personas, reprice, system
from schemas.registry import Registry

APP_REGISTRY: Final = Registry(
    (
        system.HEALTH,
        system.WHOAMI,
        system.CLOCK,
        chat.SEND_MESSAGE,
        chat.STREAM_MESSAGE,
        chat.EXECUTE_ACTION,
        chat.SUMMARIZE_EMAIL,
        personas.GENERATE,
        conversations.LIST_CONVERSATIONS,
        conversations.GET_CONVERSATION,
        budgets.GET_BUDGET_STATUS,
        admin.GET_MY_USAGE,
        *admin.ADMIN_PROCEDURES,
        *budgets.ADMIN_BUDGET_PROCEDURES,
        *reprice.ADMIN_REPRICE_PROCEDURES,
    )
)
