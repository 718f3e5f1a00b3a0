"""A small Tollbooth built from the protocol's own pieces, served over real HTTP, for the protocol and client tests.

Besides the ``system`` procedures it has a ``probe`` namespace of procedures that exercise what ``system`` cannot:
every input type, raised errors of every code, crashes, slow calls, admin access, failing subscriptions.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final

import msgspec
import uvicorn
from litestar import Litestar
from litestar.datastructures import State

from schemas.base import WireInput, WireOutput
from schemas.errors import ErrorCode
from schemas.registry import Access, Registry, mutation, query, subscription
from schemas.router import APP_REGISTRY
from server.procedures.system import SystemController
from server.rpc import (
    CallContext,
    Caller,
    ProcedureController,
    RpcConfig,
    Tracked,
    TRPCError,
    implements,
    rpc_cors_config,
    rpc_router,
    tracked,
)
from tollbooth_client import Namespace, TollboothClient
from tollbooth_client import mutation as client_mutation
from tollbooth_client import query as client_query
from tollbooth_client import subscription as client_subscription

USER_KEY: Final = "tb_user-key"
ADMIN_KEY: Final = "tb_admin-key"
USER: Final = Caller(uuid.UUID("00000000-0000-4000-8000-000000000001"), "Ada", is_admin=False)
ADMIN: Final = Caller(uuid.UUID("00000000-0000-4000-8000-000000000002"), "Grace", is_admin=True)
ALLOWED_ORIGIN: Final = "https://app.example"


# In EchoInput and EchoOutput: a Struct on both sides is a WireInput (requests stay strict).
class Nested(WireInput, frozen=True, kw_only=True):
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=100)]


class EchoInput(WireInput, frozen=True, kw_only=True):
    text: str
    amount_usd: Decimal
    at: datetime
    conversation_id: uuid.UUID
    tags: list[str] = msgspec.field(default_factory=list)
    nested: Nested | None = None


class EchoOutput(WireOutput, frozen=True, kw_only=True):
    text: str
    amount_usd: Decimal
    at: datetime
    conversation_id: uuid.UUID
    tags: list[str]
    nested: Nested | None


class FailInput(WireInput, frozen=True, kw_only=True):
    code: ErrorCode
    message: str


class SleepInput(WireInput, frozen=True, kw_only=True):
    ms: Annotated[int, msgspec.Meta(ge=0, le=5_000)]
    value: int


class Value(WireOutput, frozen=True, kw_only=True):
    value: int


class StreamInput(WireInput, frozen=True, kw_only=True):
    fail_after: int
    code: ErrorCode
    token: str = ""
    every_time: bool = False
    last_event_id: str | None = None


ECHO = mutation("probe.echo", EchoInput, EchoOutput, Access.USER, "Returns its input.")
FAIL = query("probe.fail", FailInput, Value, Access.PUBLIC, "Raises a TRPCError with the given code.")
CRASH = query("probe.crash", None, Value, Access.PUBLIC, "Raises an unexpected exception holding a secret.")
SLEEP = query("probe.sleep", SleepInput, Value, Access.PUBLIC, "Answers `value` after `ms` milliseconds.")
BUMP = mutation("probe.bump", None, Value, Access.PUBLIC, "A mutation without input.")
ADMIN_ONLY = query("probe.adminOnly", None, Value, Access.ADMIN, "Only for admins.")
STREAM = subscription(
    "probe.stream",
    StreamInput,
    Value,
    Access.PUBLIC,
    "Events 1, 2, ...; fails with `code` after `failAfter` of them, the first time a `token` is seen or `everyTime`.",
)

# The protocol is tested on the system namespace and the probes; the chat procedures have tests of their own.
SYSTEM_PROCEDURES: Final = tuple(p for p in APP_REGISTRY if p.namespace == "system")
TEST_REGISTRY: Final = Registry((*SYSTEM_PROCEDURES, ECHO, FAIL, CRASH, SLEEP, BUMP, ADMIN_ONLY, STREAM))
SECRET: Final = "sk-live-do-not-leak"


@dataclass
class Services:
    database_up: bool = True
    bumps: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    tokens_seen: set[str] = field(default_factory=set)

    async def check_database(self) -> bool:
        return self.database_up


class ProbeController(ProcedureController):
    namespace = "probe"

    @implements(ECHO)
    async def echo(self, ctx: CallContext[Services], input: EchoInput) -> EchoOutput:
        return EchoOutput(**msgspec.structs.asdict(input))

    @implements(FAIL)
    async def fail(self, ctx: CallContext[Services], input: FailInput) -> Value:
        raise TRPCError(input.code, input.message)

    @implements(CRASH)
    async def crash(self, ctx: CallContext[Services], input: None) -> Value:
        raise RuntimeError(f"database password is {SECRET}")

    @implements(SLEEP)
    async def sleep(self, ctx: CallContext[Services], input: SleepInput) -> Value:
        await asyncio.sleep(input.ms / 1000)
        return Value(value=input.value)

    @implements(BUMP)
    async def bump(self, ctx: CallContext[Services], input: None) -> Value:
        return Value(value=next(ctx.services.bumps))

    @implements(ADMIN_ONLY)
    async def admin_only(self, ctx: CallContext[Services], input: None) -> Value:
        return Value(value=1 if ctx.user.is_admin else 0)

    @implements(STREAM)
    async def stream(self, ctx: CallContext[Services], input: StreamInput) -> AsyncIterator[Tracked[Value]]:
        start = int(input.last_event_id or 0)
        fails = input.every_time or input.token not in ctx.services.tokens_seen
        ctx.services.tokens_seen.add(input.token)
        for number in range(start + 1, start + 4):
            if fails and number > input.fail_after:
                raise TRPCError(input.code, f"stream failed after {input.fail_after}")
            yield tracked(str(number), Value(value=number))


class InMemoryAuthenticator:
    """Counts lookups, to show that a batch authenticates once."""

    def __init__(self) -> None:
        self.lookups = 0
        self.fail = False

    async def authenticate(self, api_key: str) -> Caller | None:
        self.lookups += 1
        if self.fail:
            raise ConnectionError(f"auth store unreachable ({SECRET})")
        return {USER_KEY: USER, ADMIN_KEY: ADMIN}.get(api_key)


def build_app(
    config: RpcConfig | None = None,
    authenticator: InMemoryAuthenticator | None = None,
    services: Services | None = None,
) -> Litestar:
    router = rpc_router(
        [SystemController, ProbeController],
        TEST_REGISTRY,
        authenticator or InMemoryAuthenticator(),
        config or RpcConfig(max_batch_size=8, max_body_bytes=64 * 1024, sse_ping_interval_seconds=None),
    )
    return Litestar(
        route_handlers=[router],
        cors_config=rpc_cors_config([ALLOWED_ORIGIN]),
        state=State({"services": services or Services()}),
    )


@contextmanager
def serve(app: Litestar) -> Iterator[str]:
    """``app`` served by uvicorn on a free port of 127.0.0.1, in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class ProbeNamespace(Namespace):
    """The ``probe`` procedures in the Python client, declared as an application declares its own."""

    namespace = "probe"

    echo = client_mutation(ECHO)
    fail = client_query(FAIL)
    crash = client_query(CRASH)
    sleep = client_query(SLEEP)
    bump = client_mutation(BUMP)
    admin_only = client_query(ADMIN_ONLY)
    stream = client_subscription(STREAM)


class ProbeClient(TollboothClient):
    probe: ProbeNamespace

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.probe = ProbeNamespace(self._core)
