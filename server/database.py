"""Which PostgreSQL the service uses: ``DATABASE_URL``, or an embedded server under ``DATA_DIR``.

The embedded server (``pgserver``) is started on first use, shared with any other process using the same data
directory (a ``create-user`` beside a running service), and stopped when the last process using it exits.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import asyncpg
from piccolo.engine.postgres import PostgresEngine

from server.money import decode_numeric
from server.settings import get_settings

logger = logging.getLogger("tollbooth.database")

EMBEDDED_DATABASE: Final = "tollbooth"


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached; the message names the setting to fix."""


@lru_cache(maxsize=1)
def database_url() -> str:
    """The URL of the database this process uses, starting the embedded server if needed."""
    settings = get_settings()
    if settings.database_url is not None:
        logger.info("database: PostgreSQL at %s (DATABASE_URL)", redact(settings.database_url))
        return settings.database_url
    return embedded_database_url(settings.data_dir / "postgres")


def embedded_database_url(pgdata: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the embedded PostgreSQL in ``pgdata`` and return a URL to ``database``, creating it if needed."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # platformdirs warns when XDG_RUNTIME_DIR is unset or shared (common in containers); pgserver then keeps its
    # runtime files under /tmp, which is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server  # lazily: only needed without DATABASE_URL

        server = get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    url: str = server.get_uri(database)
    logger.info("database: embedded PostgreSQL in %s (DATABASE_URL is not set)", pgdata.resolve())
    return url


async def start_pool(engine: PostgresEngine, *, min_size: int, max_size: int) -> None:
    """Start ``engine``'s connection pool; its connections read NUMERIC as ``Money`` (see ``server.money``)."""
    await engine.start_connection_pool(min_size=min_size, max_size=max_size, init=_init_connection)


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec("numeric", schema="pg_catalog", encoder=str, decoder=decode_numeric, format="text")


def engine_config() -> dict[str, Any]:
    """The ``PostgresEngine`` config: asyncpg connection arguments."""
    return {"dsn": database_url()}


async def check_connection(url: str, connect_timeout: float = 5.0) -> None:
    """Connect once, or raise ``DatabaseUnavailableError`` naming ``DATABASE_URL``."""
    try:
        connection = await asyncpg.connect(url, timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        raise DatabaseUnavailableError(f"cannot reach the database at {redact(url)} (DATABASE_URL): {error}") from None
    await connection.close()


def redact(url: str) -> str:
    """The URL without its password (in the credentials or as a ``password=`` parameter), for logs and errors."""
    base, question, query = url.partition("?")
    scheme, sep, rest = base.partition("://")
    credentials, at, location = rest.rpartition("@")
    if at and ":" in credentials:
        base = f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{location}"
    if question:
        query = "&".join("password=***" if part.lower().startswith("password=") else part for part in query.split("&"))
    return base + question + query
