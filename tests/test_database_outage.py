"""PostgreSQL going away under a running service: what needs it is refused with SERVICE_UNAVAILABLE (never a 500),
what does not still runs on the spool, and the outage is logged once when it begins and once when it ends.

The database is reached through a TCP proxy on loopback that the test cuts and restores, as a crash or a network
partition would, while the application and its connection pool keep running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from piccolo.engine.postgres import PostgresEngine

from server.admin import check_totals
from server.database import Database
from server.services import build_services
from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse
from server.users import NewUser, create_user
from tests.conftest import app_database, fetch_rows, serve_app, simulator_env, until_received


class PostgresProxy:
    """Forwards loopback TCP connections to the test database; ``cut`` refuses new ones and drops the open ones."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self._open |= {client_writer, upstream_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.transport.abort()
                self._open.discard(writer)

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


@dataclass(frozen=True)
class Outage:
    """The application served on a proxied database, the proxy, and the settings it runs with."""

    http: httpx.AsyncClient
    proxy: PostgresProxy
    settings: Settings

    async def call(self, key: str, path: str, input: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"}
        if path.startswith(("chat.list", "chat.get", "admin.")):
            params = {} if input is None else {"input": json.dumps(input)}
            return await self.http.get(f"/trpc/{path}", params=params, headers=headers)
        return await self.http.post(f"/trpc/{path}", json=input or {}, headers=headers)


@pytest.fixture
async def outage(sim: RunningSimulator, db: None, tmp_path: Path) -> AsyncIterator[Outage]:
    url = urlsplit(os.environ["DATABASE_URL"])
    if not url.hostname:
        pytest.skip("the test database is reached over a unix socket; this proxy forwards TCP")
    proxy = PostgresProxy(url.hostname, url.port or 5432)
    await proxy.start()
    proxied = urlunsplit(url._replace(netloc=f"{url.username or 'postgres'}@127.0.0.1:{proxy.port}"))
    database = Database(PostgresEngine(config={"dsn": proxied, "timeout": 2}))
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path)))
    try:
        async with serve_app(settings, database) as served, httpx.AsyncClient(base_url=served.url) as http:
            yield Outage(http=http, proxy=proxy, settings=settings)
    finally:
        await proxy.cut()


def _code(response: httpx.Response) -> str:
    body = response.json()
    return "OK" if "result" in body else str(body["error"]["data"]["code"])


async def test_an_outage_refuses_what_needs_the_database_and_is_logged_once_when_it_begins_and_ends(
    outage: Outage, alice: NewUser, caplog: pytest.LogCaptureFixture
) -> None:
    root = await create_user("root", is_admin=True)
    first = await outage.call(alice.api_key, "chat.sendMessage", {"message": "hello", "model": "gpt-4o"})
    conversation_id = first.json()["result"]["data"]["conversationId"]
    assert _code(await outage.call(root.api_key, "admin.usageByModel")) == "OK"  # keys are cached from here on

    caplog.clear()
    caplog.set_level(logging.INFO)
    await outage.proxy.cut()
    expected = {
        # Needs a database read before the model call: refused, nothing sent.
        ("chat.sendMessage", "existing conversation"): "SERVICE_UNAVAILABLE",
        ("chat.executeAction", "existing conversation"): "SERVICE_UNAVAILABLE",
        ("chat.listConversations", "-"): "SERVICE_UNAVAILABLE",
        ("chat.getConversation", "-"): "SERVICE_UNAVAILABLE",
        ("admin.usageByModel", "-"): "SERVICE_UNAVAILABLE",
        # Reads nothing: runs, its claim and record in the spool.
        ("chat.sendMessage", "new conversation"): "OK",
        ("chat.executeAction", "no conversation"): "OK",
        ("chat.summarizeEmail", "no conversation"): "OK",
    }
    inputs: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
        ("chat.sendMessage", "existing conversation"): (
            alice.api_key,
            {"message": "again", "conversationId": conversation_id, "model": "gpt-4o"},
        ),
        ("chat.executeAction", "existing conversation"): (
            alice.api_key,
            {"action": "classify_intent", "text": "hi", "conversationId": conversation_id, "model": "gpt-4o"},
        ),
        ("chat.listConversations", "-"): (alice.api_key, None),
        ("chat.getConversation", "-"): (alice.api_key, {"conversationId": conversation_id}),
        ("admin.usageByModel", "-"): (root.api_key, None),
        ("chat.sendMessage", "new conversation"): (alice.api_key, {"message": "anyone?", "model": "gpt-4o"}),
        ("chat.executeAction", "no conversation"): (
            alice.api_key,
            {"action": "classify_intent", "text": "hi", "model": "gpt-4o"},
        ),
        ("chat.summarizeEmail", "no conversation"): (alice.api_key, {"email": {"body": "Meet at 3?"}}),
    }
    answered = {case: _code(await outage.call(key, case[0], input)) for case, (key, input) in inputs.items()}
    assert answered == expected
    for _ in range(30):  # a burst of refused requests does not flood the log
        response = await outage.call(alice.api_key, "chat.listConversations")
        assert response.status_code == 503
    assert (await outage.http.get("/healthz")).status_code == 503

    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    [down] = [r.getMessage() for r in records if r.name == "tollbooth.database"]
    assert down.startswith("database unavailable (")
    assert not [r for r in records if r.exc_info], "no traceback per request"
    assert len(records) <= 3, [r.getMessage() for r in records]

    await outage.proxy.start()
    assert _code(await outage.call(alice.api_key, "chat.listConversations")) == "OK"
    back = [r.getMessage() for r in caplog.records if r.name == "tollbooth.database" and "again" in r.getMessage()]
    assert len(back) == 1
    assert "failed meanwhile" in back[0]

    # What ran during the outage is recorded once the spool is replayed; nothing is left claimed or counted twice.
    services = build_services(outage.settings, app_database())
    await services.llm.replay_spool()
    assert services.llm.spool.pending() == services.llm.spool.pending_claims() == []
    assert await fetch_rows("SELECT 1 FROM llm_call_claims") == []
    rows = await fetch_rows("SELECT procedure FROM ai_usage_logs ORDER BY procedure")
    assert [row["procedure"] for row in rows] == [
        "chat.executeAction",
        "chat.sendMessage",
        "chat.sendMessage",
        "chat.summarizeEmail",
    ]
    assert (await check_totals(app_database())).consistent


async def test_a_database_lost_while_the_provider_answers_keeps_the_answer_and_spools_the_record(
    outage: Outage, alice: NewUser, sim: RunningSimulator
) -> None:
    first = await outage.call(alice.api_key, "chat.sendMessage", {"message": "hello", "model": "gpt-4o"})
    conversation_id = first.json()["result"]["data"]["conversationId"]
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=500))
    call = asyncio.create_task(
        outage.call(
            alice.api_key, "chat.sendMessage", {"message": "slow", "conversationId": conversation_id, "model": "gpt-4o"}
        )
    )
    await until_received(sim, 2)
    await outage.proxy.cut()
    response = await call
    data = response.json()["result"]["data"]
    assert data["conversation"] is None  # recorded later, from the spool
    await outage.proxy.start()
    services = build_services(outage.settings, app_database())
    assert await services.llm.replay_spool() == 1
    [conversation] = await fetch_rows("SELECT llm_calls FROM conversations")
    assert conversation["llm_calls"] == 2
    assert await fetch_rows("SELECT 1 FROM llm_call_claims") == []
    assert (await check_totals(app_database())).consistent
