"""``rpc_router``: the Litestar router that serves a procedure registry over the tRPC v11 protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request, Response, Router, route
from litestar.params import FromPath

from schemas.registry import Registry
from server.rpc.config import RpcConfig
from server.rpc.context import Authenticator
from server.rpc.controller import ALL_METHODS, DISPATCHER_OPT_KEY, ProcedureController
from server.rpc.dispatch import Dispatcher
from server.rpc.errors import error_envelope, to_trpc_error
from server.rpc.idempotency import IdempotencyStore

__all__ = ("rpc_router",)


def rpc_router(
    controllers: Sequence[type[ProcedureController]],
    registry: Registry,
    authenticator: Authenticator,
    config: RpcConfig | None = None,
    idempotency: IdempotencyStore | None = None,
) -> Router:
    """Mount ``controllers`` at ``config.path`` (``/trpc``), serving every procedure of ``registry``.

    Raises at once (start-up) when a procedure has no handler, two handlers, or a handler whose signature does not
    match it. With ``idempotency``, mutations run once per idempotency key (``server.rpc.idempotency``). Besides
    each controller's routes, a catch-all route serves batches (``/trpc/a,b?batch=1``) and answers
    unknown paths with tRPC's NOT_FOUND.
    """
    config = config or RpcConfig()
    dispatcher = Dispatcher(registry, controllers, authenticator, config, idempotency)

    @route("/{path:path}", http_method=list(ALL_METHODS), include_in_schema=False, status_code=200)
    async def batch_or_unknown(request: Request[Any, Any, Any], path: FromPath[str]) -> Response[Any]:
        return await dispatcher.handle(request, path.removeprefix("/"))

    @route("/", http_method=list(ALL_METHODS), include_in_schema=False, status_code=200)
    async def no_path(request: Request[Any, Any, Any]) -> Response[Any]:
        return await dispatcher.handle(request, "")

    def last_resort(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        """Anything that escaped the protocol still answers with a tRPC envelope."""
        error = to_trpc_error(exc)
        body = error_envelope(error, None, debug=config.debug)
        return Response(body, status_code=error.http_status, media_type="application/json")

    router = Router(
        path=config.path,
        route_handlers=[*controllers, batch_or_unknown, no_path],
        opt={DISPATCHER_OPT_KEY: dispatcher},
        request_max_body_size=config.max_body_bytes,
        exception_handlers={Exception: last_resort},
    )
    dispatcher.check_bound()
    return router
