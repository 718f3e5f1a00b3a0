"""The tRPC v11 wire protocol on Litestar, implemented once for every procedure.

Declaring a namespace::

    class SystemController(ProcedureController):
        namespace = "system"

        @implements(system.HEALTH)
        async def health(self, ctx: CallContext[SystemServices], input: None) -> HealthOutput: ...

        @implements(system.CLOCK)  # a subscription: an async generator; yield tracked(id, event) to be resumable
        async def clock(self, ctx: CallContext[object], input: ClockInput) -> AsyncIterator[Tracked[ClockEvent]]: ...

Mounting it (the app's factory)::

    app = Litestar(
        route_handlers=[rpc_router([SystemController, ...], APP_REGISTRY, authenticator, RpcConfig(...))],
        cors_config=rpc_cors_config(origins),
        state=State({"services": services}),  # handed to handlers as ctx.services (RpcConfig.services_state_key)
    )

The protocol enforces each procedure's ``Access`` (UNAUTHORIZED without a valid key, FORBIDDEN for a non-admin on
an ADMIN procedure) using the ``Authenticator`` given to ``rpc_router``; the key comes from ``Authorization: Bearer``
or, for EventSource clients, from ``connectionParams`` (``{"apiKey": key}`` or ``{"authorization": "Bearer key"}``).
A handler raises a domain error (``server.errors``, classified by ``server.rpc.errors.CODES``) or, for a protocol
matter, ``TRPCError(ErrorCode.X, message)``; any other exception becomes a generic INTERNAL_SERVER_ERROR, logged with
its traceback. Given an ``IdempotencyStore`` (``rpc_router(..., idempotency=...)``), every mutation runs at most once
per idempotency key (``server.rpc.idempotency``): handlers need not know.
"""

from __future__ import annotations

from schemas.errors import ErrorCode
from server.rpc.config import RpcConfig, rpc_cors_config
from server.rpc.context import Authenticator, CallContext, Caller
from server.rpc.controller import ProcedureController, implements
from server.rpc.errors import TRPCError
from server.rpc.router import rpc_router
from server.rpc.tracked import Tracked, tracked

__all__ = (
    "Authenticator",
    "CallContext",
    "Caller",
    "ErrorCode",
    "ProcedureController",
    "RpcConfig",
    "TRPCError",
    "Tracked",
    "implements",
    "rpc_cors_config",
    "rpc_router",
    "tracked",
)
