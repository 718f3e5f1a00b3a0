"""The client's namespaces, one class per procedure namespace, one line per procedure.

Adding a procedure: one line here (``name_in_snake_case = query(module.PROCEDURE)``). Adding a namespace: a class
here and an attribute in ``TollboothClient.__init__``.
"""

from __future__ import annotations

from schemas import system
from tollbooth_client.procedures import Namespace, query, subscription

__all__ = ("SystemNamespace",)


class SystemNamespace(Namespace):
    namespace = "system"

    health = query(system.HEALTH)
    whoami = query(system.WHOAMI)
    clock = subscription(system.CLOCK)
