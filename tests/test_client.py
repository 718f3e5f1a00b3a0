"""The Python client against a real server over HTTP: typed calls, errors, batching, subscriptions."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar, get_args

import httpx
import msgspec
import pytest
from mypy import api as mypy_api

from schemas.errors import ERROR_CODES, ErrorCode
from schemas.router import APP_REGISTRY
from schemas.system import ClockEvent, ClockInput, HealthOutput
from server.rpc import RpcConfig
from tests.rpc_testing import (
    ADMIN_KEY,
    SECRET,
    USER,
    USER_KEY,
    EchoInput,
    FailInput,
    Nested,
    ProbeClient,
    SleepInput,
    StreamInput,
    Value,
    build_app,
    serve,
)
from tollbooth_client import Namespace, Subscription, TollboothClient, TRPCClientError, mutation, query
from tollbooth_client.procedures import _camel

VERSION = version("tollbooth")  # the installed package: what the service reports

ROOT = Path(__file__).resolve().parent.parent
EventT = TypeVar("EventT")


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real network, with a record of every request sent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


async def drain(events: Subscription[EventT], into: list[EventT] | None = None) -> list[EventT]:
    received = [] if into is None else into
    async with events:
        async for event in events:
            received.append(event)
    return received


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(build_app(RpcConfig(max_batch_size=8, sse_ping_interval_seconds=0.05))) as url:
        yield url


@pytest.fixture
def network() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def client(base_url: str, network: RecordingTransport) -> AsyncIterator[ProbeClient]:
    async with ProbeClient(base_url, api_key=USER_KEY, http_transport=network) as client:
        yield client


async def test_query_returns_the_typed_output(client: ProbeClient) -> None:
    health = await client.system.health()
    assert health == HealthOutput(status="ok", version=VERSION, database="ok")
    whoami = await client.system.whoami()
    assert (whoami.user_id, whoami.name, whoami.is_admin) == (USER.user_id, USER.name, False)


async def test_mutation_round_trips_decimals_datetimes_and_uuids(client: ProbeClient) -> None:
    sent = EchoInput(
        text="héllo",
        amount_usd=Decimal("0.000000050"),
        at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        conversation_id=uuid.uuid4(),
        tags=["x"],
        nested=Nested(max_tokens=3),
    )
    echoed = await client.probe.echo(sent)
    assert echoed.amount_usd == Decimal("0.00000005")
    assert echoed.at == sent.at
    assert echoed.conversation_id == sent.conversation_id
    assert echoed.nested == Nested(max_tokens=3)


async def test_mutation_without_input(client: ProbeClient) -> None:
    first = await client.probe.bump()
    second = await client.probe.bump()
    assert second.value == first.value + 1


@pytest.mark.parametrize("code", [ErrorCode.CONFLICT, ErrorCode.TOO_MANY_REQUESTS, ErrorCode.BAD_GATEWAY])
async def test_errors_raise_trpc_client_error_with_code_number_status_and_path(
    client: ProbeClient, code: ErrorCode
) -> None:
    with pytest.raises(TRPCClientError) as caught:
        await client.probe.fail(FailInput(code=code, message="no luck"))
    error = caught.value
    assert error.code == code
    assert error.json_rpc_code == ERROR_CODES[code].json_rpc
    assert error.http_status == ERROR_CODES[code].http_status
    assert error.path == "probe.fail"
    assert error.message == "no luck"


async def test_server_crash_is_a_generic_internal_error(client: ProbeClient) -> None:
    with pytest.raises(TRPCClientError) as caught:
        await client.probe.crash()
    assert caught.value.code == ErrorCode.INTERNAL_SERVER_ERROR
    assert caught.value.http_status == 500
    assert SECRET not in str(caught.value)


async def test_access_errors(base_url: str) -> None:
    async with TollboothClient(base_url) as anonymous:
        with pytest.raises(TRPCClientError) as unauthorized:
            await anonymous.system.whoami()
    assert (unauthorized.value.code, unauthorized.value.http_status) == ("UNAUTHORIZED", 401)
    async with ProbeClient(base_url, api_key=USER_KEY) as user:
        with pytest.raises(TRPCClientError) as forbidden:
            await user.probe.admin_only()
    assert (forbidden.value.code, forbidden.value.http_status) == ("FORBIDDEN", 403)
    async with ProbeClient(base_url, api_key=ADMIN_KEY) as admin:
        assert await admin.probe.admin_only() == Value(value=1)


async def test_server_rejecting_the_input_is_bad_request(client: ProbeClient) -> None:
    with pytest.raises(TRPCClientError) as caught:
        await client.probe.sleep(SleepInput(ms=-1, value=0))
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert "$.ms" in caught.value.message


async def test_calls_of_one_tick_travel_as_one_batch(client: ProbeClient, network: RecordingTransport) -> None:
    health, slept, whoami = await asyncio.gather(
        client.system.health(), client.probe.sleep(SleepInput(ms=10, value=7)), client.system.whoami()
    )
    assert (health.status, slept.value, whoami.name) == ("ok", 7, USER.name)
    [request] = network.requests
    assert request.url.path == "/trpc/system.health,probe.sleep,system.whoami"
    assert request.url.params["batch"] == "1"
    assert request.url.params["input"] == '{"1":{"ms":10,"value":7}}'


async def test_a_batch_delivers_each_call_its_own_error(client: ProbeClient, network: RecordingTransport) -> None:
    results = await asyncio.gather(
        client.system.health(),
        client.probe.fail(FailInput(code=ErrorCode.NOT_FOUND, message="gone")),
        client.probe.crash(),
        return_exceptions=True,
    )
    assert isinstance(results[0], HealthOutput)
    assert isinstance(results[1], TRPCClientError)
    assert (results[1].code, results[1].http_status, results[1].message) == ("NOT_FOUND", 404, "gone")
    assert isinstance(results[2], TRPCClientError)
    assert results[2].code == "INTERNAL_SERVER_ERROR"
    assert len(network.requests) == 1


async def test_queries_and_mutations_of_one_tick_travel_apart(client: ProbeClient, network: RecordingTransport) -> None:
    await asyncio.gather(client.probe.bump(), client.system.health(), client.probe.bump(), client.system.health())
    methods = sorted((request.method, request.url.path) for request in network.requests)
    assert methods == [("GET", "/trpc/system.health,system.health"), ("POST", "/trpc/probe.bump,probe.bump")]


async def test_batches_are_split_at_the_maximum_size(base_url: str, network: RecordingTransport) -> None:
    async with ProbeClient(base_url, http_transport=network, max_batch_size=2) as client:
        values = await asyncio.gather(*(client.probe.sleep(SleepInput(ms=0, value=i)) for i in range(5)))
    assert [value.value for value in values] == list(range(5))
    assert [request.url.path.count(",") + 1 for request in network.requests] == [2, 2, 1]


async def test_batching_can_be_turned_off(base_url: str, network: RecordingTransport) -> None:
    async with TollboothClient(base_url, http_transport=network, batching=False) as client:
        await asyncio.gather(client.system.health(), client.system.health())
    assert [request.url.path for request in network.requests] == ["/trpc/system.health"] * 2


async def test_a_batch_the_server_refuses_fails_every_call(base_url: str) -> None:
    async with TollboothClient(base_url, max_batch_size=20) as client:
        results = await asyncio.gather(*(client.system.health() for _ in range(9)), return_exceptions=True)
    assert all(isinstance(result, TRPCClientError) and result.code == "BAD_REQUEST" for result in results)


async def test_cancelled_call_does_not_disturb_its_batch(client: ProbeClient) -> None:
    slow = asyncio.ensure_future(client.probe.sleep(SleepInput(ms=200, value=1)))
    fast = asyncio.ensure_future(client.probe.sleep(SleepInput(ms=0, value=2)))
    await asyncio.sleep(0.05)
    slow.cancel()
    assert (await fast).value == 2


async def test_subscription_yields_typed_events_until_return(client: ProbeClient) -> None:
    async with client.system.clock(ClockInput(interval_ms=10, count=3)) as events:
        received = [event async for event in events]
    assert [event.seq for event in received] == [1, 2, 3]
    assert all(isinstance(event, ClockEvent) for event in received)
    assert events.last_event_id == "3"


async def test_subscription_can_be_left_early(client: ProbeClient) -> None:
    async with client.system.clock(ClockInput(interval_ms=10, count=1000)) as events:
        async for event in events:
            if event.seq == 2:
                break
    assert events.last_event_id == "2"


async def test_subscription_reconnects_with_last_event_id_when_the_stream_breaks_off(
    network: RecordingTransport,
) -> None:
    config = RpcConfig(sse_ping_interval_seconds=None, sse_max_duration_seconds=0.25)
    with serve(build_app(config)) as url:
        async with TollboothClient(
            url, api_key=USER_KEY, http_transport=network, subscription_reconnect_delay=0.01
        ) as client:
            seqs = [event.seq async for event in client.system.clock(ClockInput(interval_ms=100, count=6))]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert len(network.requests) >= 2
    assert "last-event-id" not in network.requests[0].headers
    resumed_after = [int(request.headers["last-event-id"]) for request in network.requests[1:]]
    assert resumed_after == sorted(resumed_after)
    assert resumed_after[0] >= 1


async def test_subscription_reconnects_after_a_retryable_error(base_url: str) -> None:
    async with ProbeClient(base_url, subscription_reconnect_delay=0.01) as client:
        values = [
            event.value
            async for event in client.probe.stream(
                StreamInput(fail_after=2, code=ErrorCode.SERVICE_UNAVAILABLE, token=uuid.uuid4().hex)
            )
        ]
    assert values == [1, 2, 3, 4, 5]


async def test_subscription_raises_a_non_retryable_error(client: ProbeClient) -> None:
    received: list[Value] = []
    events = client.probe.stream(StreamInput(fail_after=2, code=ErrorCode.UNPROCESSABLE_CONTENT, token="once"))
    with pytest.raises(TRPCClientError) as caught:
        await drain(events, into=received)
    assert [event.value for event in received] == [1, 2]
    assert (caught.value.code, caught.value.http_status, caught.value.path) == (
        "UNPROCESSABLE_CONTENT",
        422,
        "probe.stream",
    )


async def test_subscription_without_key_is_unauthorized(base_url: str) -> None:
    async with TollboothClient(base_url) as client:
        with pytest.raises(TRPCClientError) as caught:
            await drain(client.system.clock(ClockInput(count=1)))
    assert caught.value.code == "UNAUTHORIZED"


async def test_subscription_gives_up_after_its_reconnects(base_url: str) -> None:
    async with ProbeClient(base_url, subscription_reconnects=2, subscription_reconnect_delay=0.01) as client:
        with pytest.raises(TRPCClientError) as caught:
            await drain(client.probe.stream(StreamInput(fail_after=0, code=ErrorCode.BAD_GATEWAY, every_time=True)))
    assert caught.value.code == "BAD_GATEWAY"


async def test_network_failures_raise_httpx_errors() -> None:
    async with TollboothClient("http://127.0.0.1:9", timeout=2) as client:
        with pytest.raises(httpx.TransportError):
            await client.system.health()


def test_every_procedure_of_the_registry_is_in_the_client() -> None:
    client = TollboothClient("http://127.0.0.1:9")
    for procedure in APP_REGISTRY:
        namespace = getattr(client, procedure.namespace)
        method_name = next(
            name for name in dir(type(namespace)) if not name.startswith("_") and _camel(name) == procedure.name
        )
        assert getattr(type(namespace), method_name).procedure is procedure


def test_a_method_named_unlike_its_procedure_is_refused() -> None:
    from schemas import system

    with pytest.raises(TypeError, match=r"expected system\.health"):

        class Misnamed(Namespace):
            namespace = "system"

            status = query(system.HEALTH)

    with pytest.raises(TypeError, match=r"system\.health is a query, not a mutation"):
        mutation(system.HEALTH)


async def test_fields_a_newer_server_adds_to_outputs_events_and_errors_are_ignored() -> None:
    """An additive change on the server (a new output field) must not break clients already deployed."""

    def newer_server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/system.health"):
            data = {"status": "ok", "version": "9.9.9", "database": "ok", "uptimeSeconds": 12, "region": {"id": "eu"}}
            return httpx.Response(200, json={"result": {"data": data}})
        if request.url.path.endswith("/system.clock"):
            event = {"seq": 1, "at": "2026-01-02T03:04:05Z", "drift": 0.5}
            stream = f"event: connected\ndata: {{}}\n\nid: 1\ndata: {json.dumps(event)}\n\nevent: return\ndata: \n\n"
            return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})
        shape = {
            "message": "no",
            "code": -32603,
            "hint": "new",
            "data": {"code": "CONFLICT", "httpStatus": 409, "x": 1},
        }
        return httpx.Response(409, json={"error": shape})

    async with TollboothClient("http://test", api_key=USER_KEY, http_transport=httpx.MockTransport(newer_server)) as c:
        assert await c.system.health() == HealthOutput(status="ok", version="9.9.9", database="ok")
        events = await drain(c.system.clock(ClockInput(count=1)))
        assert events == [ClockEvent(seq=1, at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))]
        with pytest.raises(TRPCClientError) as caught:
            await c.system.whoami()
    assert (caught.value.code, caught.value.http_status, caught.value.message) == ("CONFLICT", 409, "no")


def test_inputs_reject_unknown_fields_and_outputs_ignore_them() -> None:
    """Every Struct reachable from an input forbids unknown fields (tests/test_rpc_protocol.py checks that the server
    answers BAD_REQUEST naming the field); every Struct reachable only from outputs and events tolerates them."""

    def reachable(tp: object, seen: set[type[msgspec.Struct]]) -> set[type[msgspec.Struct]]:
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            if tp not in seen:
                seen.add(tp)
                for field in msgspec.structs.fields(tp):
                    reachable(field.type, seen)
        else:
            for arg in get_args(tp):
                reachable(arg, seen)
        return seen

    inputs: set[type[msgspec.Struct]] = set()
    outputs: set[type[msgspec.Struct]] = set()
    for procedure in APP_REGISTRY:
        reachable(procedure.input, inputs)
        reachable(procedure.output, outputs)
    assert len(inputs) >= 10
    assert len(outputs) >= 30
    assert [c.__name__ for c in inputs if not c.__struct_config__.forbid_unknown_fields] == []
    assert [c.__name__ for c in outputs - inputs if c.__struct_config__.forbid_unknown_fields] == []


def test_mypy_infers_inputs_and_outputs(tmp_path: Path) -> None:
    program = tmp_path / "typed_program.py"
    program.write_text(
        textwrap.dedent(
            """
            from typing import assert_type
            from schemas.system import ClockEvent, ClockInput, HealthOutput, WhoAmIOutput
            from tollbooth_client import Subscription, TollboothClient

            async def main() -> None:
                async with TollboothClient("http://127.0.0.1:8000", api_key="k") as client:
                    assert_type(await client.system.health(), HealthOutput)
                    assert_type(await client.system.whoami(), WhoAmIOutput)
                    events = client.system.clock(ClockInput(count=2))
                    assert_type(events, Subscription[ClockEvent])
                    async for event in events:
                        assert_type(event, ClockEvent)
                    await client.system.health(ClockInput())  # line 14
                    client.system.clock(HealthOutput(status="ok", version="1", database="ok"))  # line 15
            """
        )
    )
    recursion_limit = sys.getrecursionlimit()
    try:  # mypy raises the process-wide recursion limit and leaves it raised
        stdout, _, status = mypy_api.run(
            ["--strict", "--no-incremental", "--config-file", str(ROOT / "pyproject.toml"), str(program)]
        )
    finally:
        sys.setrecursionlimit(recursion_limit)
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["14", "15"], stdout
    assert status == 1
