"""The long-lived objects a request needs, built once per application and passed to the procedures."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from piccolo.engine.postgres import PostgresEngine

from server.chat.service import ChatService
from server.llm.core import LLMCore
from server.llm.pricing import PriceCatalogue
from server.llm.providers import ProviderSet
from server.llm.recorder import UsageRecorder
from server.llm.spool import UsageSpool
from server.settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    engine: PostgresEngine
    llm: LLMCore
    chat: ChatService

    async def check_database(self) -> bool:
        """Whether the database answers within two seconds (for ``/healthz`` and ``system.health``)."""
        try:
            async with asyncio.timeout(2):
                await self.engine._run_in_pool("SELECT 1")
        except Exception:
            return False
        return True


def build_services(
    settings: Settings,
    engine: PostgresEngine,
    *,
    catalogue: PriceCatalogue | None = None,
    simulator_origin: str | None = None,
) -> Services:
    """Wire the core. ``simulator_origin`` points providers without a key at the offline simulator."""
    llm = LLMCore(
        providers=ProviderSet.from_settings(settings, simulator_origin=simulator_origin),
        catalogue=catalogue or PriceCatalogue.load(settings.price_file),
        recorder=UsageRecorder(engine, enabled=settings.enable_usage_logging),
        spool=UsageSpool(settings.spool_dir),
    )
    chat = ChatService(llm=llm, engine=engine, default_model=settings.default_model)
    return Services(settings=settings, engine=engine, llm=llm, chat=chat)
