"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.response import Response
from piccolo.engine import engine_finder
from piccolo.engine.postgres import PostgresEngine

from server.settings import Settings, get_settings


def database_engine() -> PostgresEngine:
    engine = engine_finder()
    if not isinstance(engine, PostgresEngine):
        raise RuntimeError("piccolo_conf.DB must be a PostgresEngine")
    return engine


async def database_is_up() -> bool:
    try:
        await database_engine()._run_in_pool("SELECT 1")
    except Exception:
        return False
    return True


@get("/healthz", operation_id="healthz", tags=["system"])
async def healthz() -> Response[dict[str, str]]:
    """Liveness and database status, for load balancers: 200 when the database answers, else 503."""
    up = await database_is_up()
    return Response(
        {"status": "ok" if up else "degraded", "database": "ok" if up else "unavailable"},
        status_code=200 if up else 503,
    )


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = database_engine()
        await engine.start_connection_pool(min_size=2, max_size=20)
        try:
            yield
        finally:
            await engine.close_connection_pool()

    return Litestar(
        route_handlers=[healthz],
        lifespan=[lifespan],
        state=State({"settings": settings}),
        debug=settings.debug,
    )
