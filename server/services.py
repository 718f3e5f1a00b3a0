"""The long-lived objects a request needs, built once per application and passed to the procedures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from server.chat.service import ChatService
from server.database import Database
from server.llm.core import LLMCore
from server.llm.ledger import LeasePolicy, Ledger
from server.llm.pricing import PriceCatalogue
from server.llm.providers import ProviderSet
from server.llm.recorder import UsageRecorder
from server.llm.spool import UsageSpool
from server.media import MediaStore, media_store
from server.metrics import Metrics
from server.personas.service import PersonaService
from server.settings import Settings

HEALTH_TIMEOUT_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a procedure handler needs, built once per application by ``build_services``.

    ``settings`` (read once from the environment), ``db`` (the PostgreSQL pool, started by the app's lifespan), ``llm``
    (every model call, with its recording), ``chat`` (the chat procedures), ``personas`` (``personas.generate``) and
    ``media`` (where generated images are stored; the app's lifespan closes it). Handlers receive it as
    ``CallContext.services``; tests build their own with other settings or an unreachable database.
    """

    settings: Settings
    db: Database
    llm: LLMCore
    chat: ChatService
    personas: PersonaService
    media: MediaStore

    async def check_database(self) -> bool:
        """Whether the database answers within ``HEALTH_TIMEOUT_SECONDS`` (for ``/healthz`` and ``system.health``)."""
        return await self.db.ping(HEALTH_TIMEOUT_SECONDS)


def build_services(
    settings: Settings,
    db: Database,
    *,
    catalogue: PriceCatalogue | None = None,
    simulator_origin: str | None = None,
    media: MediaStore | None = None,
    metrics: Metrics | None = None,
) -> Services:
    """Wire the core. ``simulator_origin`` points providers without a key at the offline simulator; ``media``
    defaults to the store the settings configure (``media_store``); ``metrics`` (default: none counted) is the
    application's."""
    catalogue = catalogue or PriceCatalogue.load(settings.price_file)
    recorder = UsageRecorder(db, enabled=settings.enable_usage_logging)
    lease = LeasePolicy.from_settings(settings)
    llm = LLMCore(
        providers=ProviderSet.from_settings(settings, simulator_origin=simulator_origin),
        catalogue=catalogue,
        recorder=recorder,
        spool=UsageSpool(settings.spool_dir),
        ledger=Ledger(db, recorder, catalogue, lease, metrics),
        metrics=metrics,
    )
    chat = ChatService(llm=llm, db=db, default_model=settings.default_model)
    media = media or media_store(settings)
    personas = PersonaService(
        llm=llm,
        media=media,
        default_model=settings.default_model,
        image_model=settings.persona_image_model,
        image_concurrency=settings.persona_image_concurrency,
    )
    return Services(settings=settings, db=db, llm=llm, chat=chat, personas=personas, media=media)
