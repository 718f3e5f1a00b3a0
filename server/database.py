"""Which PostgreSQL the service uses, and the one way the code talks to it.

The database is ``DATABASE_URL``, or an embedded server under ``DATA_DIR``. The embedded server (``pgserver``) is
started on first use, shared with any other process using the same data directory (a ``create-user`` beside a running
service), and stopped when the last process using it exits.

``Database`` is the data-access layer: it owns the connection pool of Piccolo's engine and runs hand-written SQL
through public asyncpg and Piccolo API only. Repositories and services receive it explicitly; nothing reaches a global
engine. ``NamedStatement`` lets a statement with many parameters name them instead of counting them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Generic, TypeAlias, TypeVar

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from piccolo.engine import engine_finder
from piccolo.engine.postgres import PostgresEngine

from server.embedded_postgres import forget_exited_processes
from server.errors import DatabaseUnavailableError
from server.money import decode_numeric
from server.settings import get_settings

logger = logging.getLogger("tollbooth.database")

EMBEDDED_DATABASE: Final = "tollbooth"


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
        from pgserver.postgres_server import PostgresServer, get_server  # lazily: only needed without DATABASE_URL

        forget_exited_processes(pgdata.resolve(), PostgresServer.lock_path)
        server = get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    url: str = server.get_uri(database)
    logger.info('database: embedded PostgreSQL in %s (DATABASE_URL is not set); psql "%s"', pgdata.resolve(), url)
    return url


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


Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
"""A connection handed out by ``Database.transaction`` or ``Database.snapshot``: ``fetch``, ``fetchrow``,
``fetchval`` and ``execute`` as on ``Database``, bound to that transaction."""

ConnectionSetup: TypeAlias = Callable[["asyncpg.Connection[asyncpg.Record]"], Awaitable[None]]


class Database:
    """PostgreSQL through the connection pool of a Piccolo ``PostgresEngine``.

    The pool is the engine's own (``engine.pool``), so Piccolo's ORM queries and these statements share it. Every
    connection reads NUMERIC as ``Money`` (see ``server.money``). Arguments bind to ``$1``, ``$2``... in
    order; rows come back as ``asyncpg.Record`` (read by column name).

    Inside ``transaction()`` (or any Piccolo ``engine.transaction()`` of this engine in the same task), ``fetch``,
    ``fetchrow``, ``fetchval`` and ``execute`` run on the transaction's connection, as Piccolo's own queries do; a
    statement outside it on another pooled connection could wait forever on a lock the transaction holds.
    Elsewhere each statement runs on a connection of its own, borrowed from the pool for that statement.

    Without a running pool (``start``) the statement methods raise ``RuntimeError``: there is no silent one-off
    connection. Errors of the statement itself are asyncpg's (``asyncpg.PostgresError``); a connection failure
    (``UNAVAILABLE``) is ``DatabaseUnavailableError``, and an outage is logged once when it begins and once when it
    ends (with how many operations failed meanwhile), never once per request.
    """

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine
        self._down_since: float | None = None
        self._refused = 0

    @classmethod
    def from_piccolo_conf(cls) -> Database:
        """The application's database: the engine of ``piccolo_conf.DB``. Every instance shares that engine's pool."""
        engine = engine_finder()
        if not isinstance(engine, PostgresEngine):
            raise RuntimeError("piccolo_conf.DB must be a PostgresEngine")
        return cls(engine)

    @property
    def running(self) -> bool:
        """Whether the connection pool is running (started here or by another user of the same engine)."""
        return self._engine.pool is not None

    async def start(self, *, min_size: int, max_size: int, setup: ConnectionSetup | None = None) -> None:
        """Start the pool of ``min_size`` to ``max_size`` connections; ``setup`` runs on each new connection after
        the NUMERIC codec is installed (a benchmark's query logger). Raises ``RuntimeError`` if it already runs."""
        if self.running:
            raise RuntimeError("the database connection pool is already running")

        async def init(connection: asyncpg.Connection[asyncpg.Record]) -> None:
            await connection.set_type_codec(
                "numeric", schema="pg_catalog", encoder=str, decoder=decode_numeric, format="text"
            )
            if setup is not None:
                await setup(connection)

        # While the server is down asyncpg's pool logs a warning with a traceback each time it fails to refill itself:
        # this class reports an outage once when it begins and once when it ends instead.
        logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
        await self._engine.start_connection_pool(min_size=min_size, max_size=max_size, init=init, reset=_keep_session)

    async def close(self) -> None:
        """Close the pool, waiting for borrowed connections to come back; nothing happens when none runs."""
        if self.running:
            await self._engine.close_connection_pool()

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Every row of ``sql`` (an empty list when there are none)."""
        return await self._run(lambda connection: connection.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        """The first row of ``sql``, or None when it returns none."""
        return await self._run(lambda connection: connection.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: object) -> Any:
        """The first column of the first row of ``sql``, or None when it returns no row."""
        return await self._run(lambda connection: connection.fetchval(sql, *args))

    async def execute(self, sql: str, *args: object) -> str:
        """Run ``sql`` for its effect; returns PostgreSQL's status tag (``"DELETE 3"``)."""
        return await self._run(lambda connection: connection.execute(sql, *args))

    async def _run(self, statement: Callable[[Connection | asyncpg.Pool[asyncpg.Record]], Awaitable[T]]) -> T:
        """Run ``statement`` on the current transaction's connection, or on the pool (a connection of its own)."""
        try:
            result = await statement(self._transaction_connection() or self._pool())
        except UNAVAILABLE as error:
            raise self._went_down(error) from None
        if self._down_since is not None:
            self._came_back()
        return result

    async def delete_in_batches(self, sql: str, *args: object, batch: int) -> int:
        """Run a ``DELETE`` whose last parameter is a row limit until it deletes fewer than ``batch`` rows (each batch
        its own statement, so no lock is held long); returns how many rows it deleted in all."""
        deleted = 0
        while True:
            status = await self.execute(sql, *args, batch)
            count = int(status.rsplit(" ", 1)[1])
            deleted += count
            if count < batch:
                return deleted

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A READ COMMITTED transaction: commits when the block ends, rolls back when it raises.

        It is Piccolo's ``engine.transaction()``, not a bare asyncpg one, so that ORM queries in the block
        (``await User(...).save()``) and this class's methods join it instead of committing on their own; inside
        another transaction of the engine it joins that one (Piccolo's nesting), and only the outermost commits.
        A connection failure anywhere in it (``BEGIN``, a statement, ``COMMIT``) is ``DatabaseUnavailableError``.
        """
        if self._engine.current_transaction.get() is None:
            self._pool()  # Piccolo would quietly open a connection outside the pool
        try:
            async with self._engine.transaction() as transaction:
                yield transaction.connection
        except UNAVAILABLE as error:
            raise self._went_down(error) from None
        if self._down_since is not None:
            self._came_back()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        """A pooled connection in a read-only REPEATABLE READ transaction, of its own even inside ``transaction()``.

        A read made of several statements then sees one state of the database: totals and the rows they sum can never
        disagree because a call was recorded between two statements. A write in it raises
        ``asyncpg.ReadOnlySQLTransactionError``; a connection failure ``DatabaseUnavailableError``.
        """
        try:
            async with (
                self._pool().acquire() as connection,
                connection.transaction(isolation="repeatable_read", readonly=True),
            ):
                yield connection
        except UNAVAILABLE as error:
            raise self._went_down(error) from None
        if self._down_since is not None:
            self._came_back()

    @property
    def available(self) -> bool:
        """False from the first connection failure until a statement succeeds again."""
        return self._down_since is None

    def _went_down(self, error: BaseException) -> DatabaseUnavailableError:
        """Count a failure; the first of an outage is logged (once, without credentials), the rest only counted."""
        cause = type(error).__name__
        if self._down_since is None:
            self._down_since, self._refused = time.monotonic(), 0
            logger.error(
                "database unavailable (%s); requests that need it get SERVICE_UNAVAILABLE until it is back", cause
            )
        self._refused += 1
        return DatabaseUnavailableError(f"the database is unavailable ({cause}); retry later")

    def _came_back(self) -> None:
        assert self._down_since is not None
        logger.warning(
            "database available again after %.1f s; %d database operation(s) failed meanwhile",
            time.monotonic() - self._down_since,
            self._refused,
        )
        self._down_since = None

    async def ping(self, timeout_seconds: float) -> bool:
        """Whether the database answers ``SELECT 1`` within ``timeout_seconds``; never raises (for health checks)."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self.fetchval("SELECT 1")
        except Exception:  # whatever the reason (no pool, refused, timed out, shutting down), it is not up
            return False
        return True

    def _pool(self) -> asyncpg.Pool[asyncpg.Record]:
        pool = self._engine.pool
        if pool is None:
            raise RuntimeError("the database connection pool is not running")
        return pool

    def _transaction_connection(self) -> Connection | None:
        transaction = self._engine.current_transaction.get()
        return None if transaction is None else transaction.connection


async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a connection goes through on its way back to the pool, after asyncpg rolled back any transaction left
    open: nothing. asyncpg's default resets the session (``RESET ALL``, ``UNLISTEN *``, ``CLOSE ALL``, advisory
    unlocks), a round trip on every release, two per model call (measured: 7% of the service's samples). Nothing here
    changes session state: no ``SET``, ``LISTEN``, cursor held past its transaction or session advisory lock."""


UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)
"""What a connection failure looks like: refused or reset, timed out, closed, the server shutting down or full."""

_NAMED_PARAMETER: Final = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
ParametersT = TypeVar("ParametersT", bound=msgspec.Struct)
T = TypeVar("T")


class NamedStatement(Generic[ParametersT]):
    """SQL written with ``:name`` placeholders, compiled once to asyncpg's ``$1``, ``$2``... for ``parameters``.

    A statement of many positional parameters breaks silently when two of the same type trade places; here each value
    is bound by name from a field of the ``parameters`` Struct. Building the statement raises ``ValueError`` when a
    placeholder has no field or a field no placeholder, so a mismatch fails at import. A placeholder used several
    times is one parameter. ``::type`` casts are not placeholders; ``:name`` inside a string literal would be one.
    """

    def __init__(self, sql: str, parameters: type[ParametersT]) -> None:
        names: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            return f"${names.setdefault(match[1], len(names) + 1)}"

        self.sql: Final = _NAMED_PARAMETER.sub(number, sql)
        self.names: Final = tuple(names)
        fields = set(parameters.__struct_fields__)
        unbound, unused = sorted(set(names) - fields), sorted(fields - set(names))
        if unbound or unused:
            raise ValueError(
                f"{parameters.__name__} does not match the statement: placeholders without a field {unbound}, "
                f"fields without a placeholder {unused}"
            )

    def arguments(self, values: ParametersT) -> tuple[object, ...]:
        """The values of ``values``' fields in ``$n`` order, to pass after ``sql``."""
        return tuple(getattr(values, name) for name in self.names)
