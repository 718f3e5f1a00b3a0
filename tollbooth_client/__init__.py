"""The typed async Python client of Tollbooth, built on httpx and the wire types in ``schemas``.

::

    async with TollboothClient("http://127.0.0.1:8000", api_key=key) as client:
        health = await client.system.health()                       # HealthOutput
        async with client.system.clock(ClockInput(count=3)) as events:
            async for event in events:                             # ClockEvent
                ...

Every failed call raises ``TRPCClientError`` (code, JSON-RPC code, HTTP status, path, message).
"""

from __future__ import annotations

from schemas.errors import ErrorCode
from tollbooth_client.client import TollboothClient
from tollbooth_client.errors import TRPCClientError
from tollbooth_client.procedures import Namespace, mutation, query, subscription
from tollbooth_client.subscription import Subscription

__all__ = (
    "ErrorCode",
    "Namespace",
    "Subscription",
    "TRPCClientError",
    "TollboothClient",
    "mutation",
    "query",
    "subscription",
)
