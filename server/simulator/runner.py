"""Serve the simulator over real HTTP on a free loopback port, inside the caller's event loop.

Real HTTP, not an in-process transport, because the point is to exercise the official SDKs end to end: their
URL building, headers, retries, timeouts and SSE parsing.

uvicorn logs through module-level loggers that every server in the process shares, so the simulator's routine lines
("Uvicorn running on ...") would read as the service's own; they are dropped (warnings and errors are kept), and the
log names one listen address, the service's.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import msgspec
import uvicorn

from server.simulator.app import ANTHROPIC_PREFIX, GEMINI_PREFIX, OPENAI_PREFIX, create_simulator_app
from server.simulator.script import SimulatorState

_STARTUP_TIMEOUT_SECONDS: Final = 10.0
_GRACEFUL_SHUTDOWN_SECONDS: Final = 1
_UVICORN_LOGGER: Final = "uvicorn.error"
_serving_simulator: Final = contextvars.ContextVar("tollbooth_serving_simulator", default=False)


class _SimulatorRoutineLines(logging.Filter):
    """Drops the records below WARNING that are logged from within a simulator's uvicorn task."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not _serving_simulator.get()


def _hide_routine_lines() -> None:
    uvicorn_logger = logging.getLogger(_UVICORN_LOGGER)
    if not any(isinstance(existing, _SimulatorRoutineLines) for existing in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_SimulatorRoutineLines())


class SimulatorBaseUrls(msgspec.Struct, frozen=True, kw_only=True):
    """Base URLs in the form each SDK (and ``OPENAI_BASE_URL`` etc.) expects."""

    openai: str
    anthropic: str
    gemini: str

    @classmethod
    def for_origin(cls, origin: str) -> SimulatorBaseUrls:
        """For a simulator served elsewhere, e.g. ``python -m server.simulator`` at ``http://127.0.0.1:8001``."""
        origin = origin.rstrip("/")
        return cls(
            openai=origin + OPENAI_PREFIX,
            anthropic=origin + ANTHROPIC_PREFIX,
            gemini=origin + GEMINI_PREFIX + "/",
        )


class RunningSimulator(msgspec.Struct, frozen=True, kw_only=True):
    origin: str
    base_urls: SimulatorBaseUrls
    state: SimulatorState


@asynccontextmanager
async def running_simulator(
    state: SimulatorState | None = None, *, host: str = "127.0.0.1"
) -> AsyncIterator[RunningSimulator]:
    """Serve a simulator on ``host`` at a port the OS picks, for the duration of the ``async with`` block.

    Requests still in flight at exit (a scripted delay the client gave up on) get a second to finish.
    """
    simulator_state = state if state is not None else SimulatorState()
    config = uvicorn.Config(
        create_simulator_app(simulator_state),
        host=host,
        port=0,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    _hide_routine_lines()
    context = contextvars.copy_context()
    context.run(_serving_simulator.set, True)
    serving = asyncio.create_task(server.serve(), name="tollbooth-simulator", context=context)
    try:
        await _wait_until_started(server, serving)
        port = server.servers[0].sockets[0].getsockname()[1]
        origin = f"http://{host}:{port}"
        yield RunningSimulator(origin=origin, base_urls=SimulatorBaseUrls.for_origin(origin), state=simulator_state)
    finally:
        server.should_exit = True
        await serving


async def _wait_until_started(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("the simulator stopped before it started serving")
        if loop.time() > deadline:
            raise TimeoutError("the simulator did not start serving in time")
        await asyncio.sleep(0.005)
