"""The application factory: the tRPC router over the namespace controllers, the services, and their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

from litestar import Litestar, MediaType, Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Response
from litestar.types import ControllerRouterHandler

from schemas.router import APP_REGISTRY
from server.auth import DatabaseAuthenticator
from server.budgets.alerts import AlertDeliverer
from server.console import ConsoleSessions, console_handlers, console_template_config
from server.database import Database
from server.errors import DatabaseUnavailableError
from server.idempotency import PRUNE_INTERVAL_SECONDS, IdempotencyKeys
from server.llm.ledger import LeasePolicy
from server.llm.pricing import PriceCatalogue
from server.llm.response_cache import PRUNE_INTERVAL_SECONDS as CACHE_PRUNE_INTERVAL_SECONDS
from server.llm.routing import provider_for_model
from server.media import (
    CACHE_CONTROL,
    LOCAL_ROUTE,
    LocalMediaStore,
    describe_media,
    media_store,
    signed_url_answer_ttl,
)
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.metrics import Metrics
from server.procedures.admin import AdminController
from server.procedures.chat import ChatController
from server.procedures.personas import PersonasController
from server.procedures.system import SystemController, service_version
from server.rpc import RpcConfig, rpc_cors_config, rpc_router
from server.rpc.openapi import openapi_config
from server.services import Services, build_services
from server.settings import Settings, get_settings

logger = logging.getLogger("tollbooth")

SPOOL_REPLAY_INTERVAL_SECONDS: Final = 5.0
CONTROLLERS: Final = (SystemController, ChatController, PersonasController, AdminController)


@get("/healthz", operation_id="healthz", tags=["operations"])
async def healthz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """Liveness and database status for load balancers: 200 when the database answers, else 503."""
    services: Services = request.app.state["services"]
    up = await services.check_database()
    return Response(
        {"status": "ok" if up else "degraded", "database": "ok" if up else "unavailable"},
        status_code=200 if up else 503,
    )


@get(f"{LOCAL_ROUTE}/{{key:str}}", operation_id="mediaFile", include_in_schema=False)
async def media_file(request: Request[Any, Any, Any], key: FromPath[str]) -> Response[bytes]:
    """A generated image of the local media store (routed only when no ``S3_BUCKET`` is set), immutable and tagged
    by its content hash; 404 for any name that is not a stored content name in the media directory."""
    services: Services = request.app.state["services"]
    store = services.media
    found = await store.read(key) if isinstance(store, LocalMediaStore) else None
    if found is None:
        return Response(b"not found", status_code=404, media_type="text/plain")
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": found.etag, "X-Content-Type-Options": "nosniff"}
    if {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")} & {found.etag, "*"}:
        return Response(b"", status_code=304, headers=headers)
    return Response(found.data, media_type=found.content_type, headers=headers)


async def _every(interval_seconds: float, job: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``job`` at start-up and every ``interval_seconds``; a failed pass is logged (an outage only by the
    database, once) and retried at the next."""
    while True:
        try:
            await job()
        except DatabaseUnavailableError:
            pass
        except Exception:
            logger.exception("%s failed; will retry", what)
        await asyncio.sleep(interval_seconds)


def _check_default_model(settings: Settings, catalogue: PriceCatalogue) -> None:
    """Warn at start-up of a ``DEFAULT_MODEL`` whose calls would fail or go unpriced (``Settings`` made sure it
    routes to a provider)."""
    model = settings.default_model
    provider = provider_for_model(model)
    configured = {"openai": settings.openai, "anthropic": settings.anthropic, "gemini": settings.gemini}[provider]
    if configured.api_key is None and not settings.offline:
        logger.warning(
            "DEFAULT_MODEL %r is served by %s, which is not configured (%s_API_KEY is not set): every call that names "
            "no model will fail",
            model,
            provider,
            provider.upper(),
        )
    if not catalogue.is_priced(provider, model, datetime.datetime.now(datetime.UTC)):
        catalogue.warn_unpriced(provider, model, setting="DEFAULT_MODEL")


def metrics_endpoint(metrics: Metrics, token: str | None) -> HTTPRouteHandler:
    """``GET /metrics``: every metric in the Prometheus text format; with ``token`` (``METRICS_TOKEN``) only for
    ``Authorization: Bearer <token>`` (else 401), compared in constant time. Outside the tRPC router and OpenAPI."""
    expected = hashlib.sha256(token.encode()).digest() if token is not None else None

    @get("/metrics", operation_id="metrics", include_in_schema=False)
    async def serve_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        if expected is not None:
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            given = hashlib.sha256(credentials.strip().encode()).digest()
            # Both sides hashed: the comparison takes the same time whatever was sent, its length included.
            if not (hmac.compare_digest(given, expected) and scheme.lower() == "bearer"):
                return Response(
                    b"401 Unauthorized: /metrics needs Authorization: Bearer <METRICS_TOKEN>\n",
                    status_code=401,
                    media_type=MediaType.TEXT,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        body = await asyncio.to_thread(metrics.exposition)
        # As a header: Litestar would add a second charset to a text media type.
        return Response(body, headers={"content-type": METRICS_CONTENT_TYPE})

    return serve_metrics


def create_app(settings: Settings | None = None, db: Database | None = None) -> Litestar:
    """Build the service on ``db`` (default: ``piccolo_conf.DB``'s). With no provider key configured, the built-in
    simulator answers every model call."""
    settings = settings or get_settings()
    db = db or Database.from_piccolo_conf()
    catalogue = PriceCatalogue.load(settings.price_file)  # here, not in the lifespan: a bad PRICE_FILE fails at once
    _check_default_model(settings, catalogue)
    media = media_store(settings)
    logger.info("media: %s", describe_media(settings))
    metrics = Metrics(spool_dir=settings.spool_dir, enabled=settings.metrics_enabled)
    console_sessions = ConsoleSessions(
        db, secret=settings.console_secret, ttl_seconds=settings.console_session_ttl_seconds
    )
    idempotency_keys = IdempotencyKeys(
        db,
        ttl_seconds=settings.idempotency_ttl_seconds,
        lease=LeasePolicy.from_settings(settings),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if not db.running:  # a host (the tests) may already run the pool
                await db.start(min_size=2, max_size=settings.database_pool_size)
                stack.push_async_callback(db.close)
            simulator_origin = None
            if settings.offline:
                from server.simulator import running_simulator

                simulator = await stack.enter_async_context(running_simulator())
                simulator_origin = simulator.origin
                logger.info("built-in provider simulator listening at %s", simulator_origin)
            services = build_services(
                settings, db, catalogue=catalogue, simulator_origin=simulator_origin, media=media, metrics=metrics
            )
            stack.push_async_callback(media.aclose)
            app.state["services"] = services
            app.state["console_sessions"] = console_sessions
            logger.info(
                "console: /console, sessions signed with %s",
                "a key made at start-up (CONSOLE_SECRET is not set): they end with this process"
                if console_sessions.ephemeral_secret
                else "CONSOLE_SECRET",
            )
            llm = services.llm
            replayer = asyncio.create_task(_every(SPOOL_REPLAY_INTERVAL_SECONDS, llm.replay_spool, "spool replay"))
            sweeper = asyncio.create_task(_every(settings.claim_sweep_interval_seconds, llm.sweep, "claim sweep"))
            deliverer = AlertDeliverer.from_settings(settings, db)
            stack.push_async_callback(deliverer.aclose)
            alerts = asyncio.create_task(deliverer.run_forever())
            pruner = asyncio.create_task(
                _every(PRUNE_INTERVAL_SECONDS, idempotency_keys.prune, "idempotency key pruning")
            )
            cache_pruner = asyncio.create_task(
                _every(CACHE_PRUNE_INTERVAL_SECONDS, llm.cache.prune, "response cache pruning")
            )
            # Everything built so far (SDK clients, pydantic models, price tables) lives as long as the process: keep
            # it out of the collector's scans. Measured: p99 at concurrency 16 went from 131 ms to 50 ms.
            gc.freeze()
            try:
                yield
            finally:
                for task in (replayer, sweeper, alerts, pruner, cache_pruner):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    rpc = rpc_router(
        CONTROLLERS,
        APP_REGISTRY,
        DatabaseAuthenticator(db),
        RpcConfig(
            max_batch_size=settings.max_batch_size,
            max_body_bytes=settings.max_body_bytes,
            debug=settings.debug,
            dedup_window_seconds=settings.dedup_window_seconds,
            signed_url_answer_ttl_seconds=signed_url_answer_ttl(settings),
        ),
        idempotency_keys,
    )
    handlers: list[ControllerRouterHandler] = [healthz, rpc]
    if isinstance(media, LocalMediaStore):
        handlers.append(media_file)
    if settings.metrics_enabled:
        handlers.append(metrics_endpoint(metrics, settings.metrics_token))
    return Litestar(
        route_handlers=[*handlers, *console_handlers()],
        template_config=console_template_config(),
        lifespan=[lifespan],
        cors_config=rpc_cors_config(settings.cors_origins) if settings.cors_origins else None,
        openapi_config=openapi_config(title="Tollbooth", version=service_version(), path="/schema"),
        debug=settings.debug,
        logging_config=None,  # the CLI configures logging once, from LOG_LEVEL
    )
