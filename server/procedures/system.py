"""The ``system`` namespace: health, identity, and a resumable clock subscription."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Final, Protocol

from schemas import system
from schemas.system import ClockEvent, ClockInput, HealthOutput, WhoAmIOutput
from server.rpc import CallContext, ProcedureController, Tracked, implements, tracked

__all__ = ("SystemController", "SystemServices")

logger: Final = logging.getLogger("tollbooth.procedures.system")
DATABASE_CHECK_TIMEOUT_SECONDS: Final = 2.0


class SystemServices(Protocol):
    """What the system procedures need from the app's services."""

    @property
    def check_database(self) -> Callable[[], Awaitable[bool]]: ...


@cache
def service_version() -> str:
    try:
        return version("tollbooth")
    except PackageNotFoundError:
        return "0+unknown"


class SystemController(ProcedureController):
    namespace = "system"

    @implements(system.HEALTH)
    async def health(self, ctx: CallContext[SystemServices], input: None) -> HealthOutput:
        try:
            async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_SECONDS):
                database_ok = await ctx.services.check_database()
        except Exception:
            logger.warning("database check failed", exc_info=True)
            database_ok = False
        return HealthOutput(
            status="ok" if database_ok else "degraded",
            version=service_version(),
            database="ok" if database_ok else "unavailable",
        )

    @implements(system.WHOAMI)
    async def whoami(self, ctx: CallContext[object], input: None) -> WhoAmIOutput:
        user = ctx.user
        return WhoAmIOutput(user_id=user.user_id, name=user.name, is_admin=user.is_admin)

    @implements(system.CLOCK)
    async def clock(self, ctx: CallContext[object], input: ClockInput) -> AsyncIterator[Tracked[ClockEvent]]:
        """Events ``seq = 1..count``; resumed with ``lastEventId = N`` it continues at ``N + 1``."""
        start = int(input.last_event_id) if input.last_event_id is not None else 0
        for seq in range(start + 1, input.count + 1):
            if seq > start + 1:
                await asyncio.sleep(input.interval_ms / 1000)
            yield tracked(str(seq), ClockEvent(seq=seq, at=datetime.now(UTC)))
