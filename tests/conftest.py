"""Test infrastructure: a real PostgreSQL database of its own for the test session, emptied for every test.

``TEST_DATABASE_URL`` names a server to create the session's database on (it needs the CREATEDB privilege); without it,
the embedded PostgreSQL under ``.data/test-postgres`` (``TEST_PGDATA`` moves it) is used. The session's database is
created and migrated once, and dropped at the end.

A run stopped by SIGTERM (a CI timeout, ``kill``) ends as Ctrl-C ends it: its database is dropped and the embedded
PostgreSQL stopped if no other process uses it. A run killed harder (SIGKILL) can do neither; the next run on the
embedded server takes the dead process off pgserver's list of users (``server.embedded_postgres``), so that it stops
the server at its end, and drops the databases of runs whose process is gone.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import pytest
import uvicorn

from server.database import redact
from server.settings import Settings
from server.simulator import RunningSimulator, running_simulator
from tests.s3_server import s3_bucket as s3_bucket  # fixtures shared with every test module: a bucket on moto's
from tests.s3_server import s3_server as s3_server  # standalone S3 server (tests/s3_server.py)
from tollbooth_client import TollboothClient

if TYPE_CHECKING:
    from server.database import Database
    from server.services import Services
    from server.users import NewUser

ROOT = Path(__file__).resolve().parent.parent
TABLES = (
    "ai_usage_logs",
    "messages",
    "conversations",
    "users",
    "stream_requests",
    "llm_call_claims",
    "budgets",
    "budget_periods",
    "budget_alerts",
    "idempotency_keys",
    "response_cache",
    "response_cache_daily",
    "idempotent_replay_counts",
)

_admin_url: str | None = None
_test_database = f"tollbooth_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
_TEST_DATABASE_NAME = re.compile(r"tollbooth_test_(?P<pid>[0-9]+)_[0-9a-f]{8}")


def _with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead, keeping host, credentials and query (e.g. a socket ``host=``)."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")


def pytest_configure(config: pytest.Config) -> None:
    global _admin_url
    from server.database import embedded_database_url

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind as on Ctrl-C: pytest_unconfigure, atexit
    test_server = os.environ.get("TEST_DATABASE_URL")
    pgdata = Path(os.environ.get("TEST_PGDATA") or ROOT / ".data" / "test-postgres")
    _admin_url = test_server or embedded_database_url(pgdata, database="postgres")
    if test_server is None:  # every run on the embedded server is a process of this machine
        asyncio.run(_drop_abandoned_databases(_admin_url))
    asyncio.run(_create_database(_admin_url, _test_database))
    os.environ["DATABASE_URL"] = _with_database(_admin_url, _test_database)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "PRICE_FILE"):
        os.environ.pop(name, None)

    from server.migrations import migrate_forwards

    asyncio.run(migrate_forwards())
    config.stash[_summary_key] = f"test database: {_test_database} on {redact(_admin_url)}"


_summary_key = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash.get(_summary_key, "")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _admin_url is not None:
        asyncio.run(_drop_database(_admin_url, _test_database))


async def _create_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_abandoned_databases(admin_url: str) -> None:
    """Drop the session databases of earlier runs whose process is gone (killed before it could drop its own)."""
    from server.embedded_postgres import process_running

    connection = await asyncpg.connect(admin_url)
    try:
        for row in await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'tollbooth_test_%'"):
            name = _TEST_DATABASE_NAME.fullmatch(row["datname"])
            if name is not None and not process_running(int(name["pid"])):
                await connection.execute(f'DROP DATABASE IF EXISTS "{name[0]}" WITH (FORCE)')
    finally:
        await connection.close()


async def _drop_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def app_database() -> Database:
    """The application's database (``piccolo_conf.DB``, the session's test database); the ``database_pool`` fixture
    runs its pool."""
    from server.database import Database

    return Database.from_piccolo_conf()


@pytest.fixture(scope="session")
async def database_pool() -> AsyncIterator[None]:
    database = app_database()
    await database.start(min_size=1, max_size=20)
    yield
    await database.close()


@pytest.fixture
async def db(database_pool: None) -> None:
    """An empty database for this test (every table truncated before it runs)."""
    await app_database().execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")


@pytest.fixture
async def unreachable_database() -> AsyncIterator[Database]:
    """A database whose server refuses every connection: its pool runs, but lending a connection raises ``OSError``."""
    from piccolo.engine.postgres import PostgresEngine

    from server.database import Database

    database = Database(PostgresEngine(config={"dsn": "postgresql://postgres@127.0.0.1:1/nowhere", "timeout": 1}))
    await database.start(min_size=0, max_size=1)
    yield database
    await database.close()


@pytest.fixture(scope="session")
async def simulator() -> AsyncIterator[RunningSimulator]:
    """One provider simulator for the session; each test that uses it gets a clean one via ``sim``."""
    async with running_simulator() as running:
        yield running


@pytest.fixture
def sim(simulator: RunningSimulator) -> RunningSimulator:
    simulator.state.reset()
    return simulator


def simulator_env(sim: RunningSimulator, **overrides: str) -> dict[str, str]:
    """Settings that point every provider's real SDK at the simulator."""
    return {
        "OPENAI_API_KEY": "sk-test-openai",
        "OPENAI_BASE_URL": sim.base_urls.openai,
        "ANTHROPIC_API_KEY": "sk-test-anthropic",
        "ANTHROPIC_BASE_URL": sim.base_urls.anthropic,
        "GEMINI_API_KEY": "test-gemini",
        "GEMINI_BASE_URL": sim.base_urls.gemini,
        "PROVIDER_MAX_RETRIES": "0",
        "PROVIDER_TIMEOUT_SECONDS": "5",
        **overrides,
    }


class ServedApp(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    settings: Settings


@asynccontextmanager
async def serve_app(settings: Settings, db: Database | None = None) -> AsyncIterator[ServedApp]:
    """The real application on uvicorn at a free loopback port, in this event loop (so it shares the test's pool);
    ``db`` replaces the application's database (one behind a proxy that a test can cut)."""
    from server.app import create_app

    config = uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the app stopped during start-up")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield ServedApp(url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def app_server(sim: RunningSimulator, db: None, tmp_path: Path) -> AsyncIterator[ServedApp]:
    """The application, its providers pointed at the simulator, on an empty database."""
    async with serve_app(Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path)))) as served:
        yield served


async def fetch_rows(sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of a query on the test database, as plain dicts."""
    return [dict(row) for row in await app_database().fetch(sql, *args)]


@pytest.fixture
async def alice(db: None) -> NewUser:
    from server.users import create_user

    return await create_user("alice")


@pytest.fixture
async def client(app_server: ServedApp, alice: NewUser) -> AsyncIterator[TollboothClient]:
    """Alice's client on the application, one HTTP request per call."""
    async with TollboothClient(app_server.url, api_key=alice.api_key, batching=False) as client:
        yield client


MakeServices = Callable[..., "Services"]


@pytest.fixture
def make_services(sim: RunningSimulator, db: None, tmp_path: Path) -> MakeServices:
    """Services over the simulator; ``env`` overrides settings, ``database`` the database (e.g. an unreachable one)."""
    from server.services import build_services

    def make(database: Database | None = None, **env: str) -> Services:
        settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), **env))
        return build_services(settings, database or app_database())

    return make


async def until_received(sim: RunningSimulator, requests: int, *, seconds: float = 20.0) -> None:
    """Wait until the simulator has received ``requests`` provider requests (fail after ``seconds``)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while len(sim.state.requests) < requests:
        assert asyncio.get_running_loop().time() < deadline, f"the provider received {len(sim.state.requests)}"
        await asyncio.sleep(0.01)


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A directory for an embedded PostgreSQL's data, outside ``tmp_path``: pytest makes its temporary root private
    (0700) whenever a session starts, and when the tests run as root pgserver runs PostgreSQL as the system user
    ``pgserver``, whom any other session starting meanwhile would lock out of its data directory."""
    with tempfile.TemporaryDirectory(prefix="tollbooth-test-", ignore_cleanup_errors=True) as directory:
        yield Path(directory)
