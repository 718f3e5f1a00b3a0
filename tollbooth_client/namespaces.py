"""The client's namespaces, one class per procedure namespace, one line per procedure.

Adding a procedure: one line here (``name_in_snake_case = query(module.PROCEDURE)``). Adding a namespace: a class
here and an attribute in ``TollboothClient.__init__``.
"""

from __future__ import annotations

from schemas import chat, system
from tollbooth_client.procedures import Namespace, mutation, query, subscription

__all__ = ("ChatNamespace", "SystemNamespace")


class SystemNamespace(Namespace):
    namespace = "system"

    health = query(system.HEALTH)
    whoami = query(system.WHOAMI)
    clock = subscription(system.CLOCK)


class ChatNamespace(Namespace):
    namespace = "chat"

    send_message = mutation(chat.SEND_MESSAGE)
    execute_action = mutation(chat.EXECUTE_ACTION)
    summarize_email = mutation(chat.SUMMARIZE_EMAIL)
