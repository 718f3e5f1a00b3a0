"""The streamed batch (JSON lines) and subscriptions (server-sent events), byte for byte as @trpc/server sends them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar

from schemas import system
from schemas.registry import Registry
from schemas.system import ClockEvent, ClockInput, HealthOutput
from server.rpc import CallContext, ProcedureController, RpcConfig, Tracked, implements, rpc_router, tracked
from tests.rpc_testing import USER_KEY, InMemoryAuthenticator, build_app, serve

USER_AUTH = {"authorization": f"Bearer {USER_KEY}"}
JSONL = {"trpc-accept": "application/jsonl"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = RpcConfig(max_batch_size=8, sse_ping_interval_seconds=0.05, sse_reconnect_after_inactivity_seconds=5)
    with serve(build_app(config)) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{base_url}/trpc/", timeout=10) as client:
        yield client


def q(value: Any, **params: str) -> dict[str, str]:
    return {**params, "input": json.dumps(value)}


def events_of(text: str) -> list[dict[str, str]]:
    """Each SSE event's fields; tRPC ends every event with two newlines after its last field line."""
    events = []
    for block in text.split("\n\n\n"):
        if block:
            events.append(
                dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in block.split("\n"))
            )
    return events


async def test_streamed_batch_sends_the_head_then_each_call_as_it_settles(http: httpx.AsyncClient) -> None:
    inputs = {"0": {"ms": 400, "value": 0}, "2": {"ms": 0, "value": 2}}
    started = time.monotonic()
    async with http.stream(
        "GET", "probe.sleep,system.health,probe.sleep", params=q(inputs, batch="1"), headers=JSONL
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["vary"] == "trpc-accept, accept"
        assert "content-length" not in response.headers
        lines = response.aiter_lines()
        head = await anext(lines)
        assert time.monotonic() - started < 0.3, "the head must not wait for the calls"
        rest = [line async for line in lines if line]
    assert head == '{"0":[[0],[null,0,0]],"1":[[0],[null,0,1]],"2":[[0],[null,0,2]]}'
    chunks = [json.loads(line) for line in rest]
    assert [chunk[0] for chunk in chunks][-1] == 0, "the slow call settles last"
    assert sorted(chunk[0] for chunk in chunks) == [0, 1, 2]
    by_index = {index: envelope for index, status, [[envelope]] in chunks if status == 0}
    assert by_index[0] == {"result": {"data": {"value": 0}}}
    assert by_index[1]["result"]["data"]["status"] == "ok"
    assert by_index[2] == {"result": {"data": {"value": 2}}}
    assert rest[0].startswith(f"[{chunks[0][0]},0,[[{{")


async def test_streamed_batch_carries_errors_in_their_line(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "system.whoami,probe.sleep,nope.nothing", params=q({"1": {"ms": 0}}, batch="1"), headers=JSONL
    )
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0] == '{"0":[[0],[null,0,0]],"1":[[0],[null,0,1]],"2":[[0],[null,0,2]]}'
    errors = {index: envelope["error"]["data"] for index, _, [[envelope]] in map(json.loads, lines[1:])}
    assert errors == {
        0: {"code": "UNAUTHORIZED", "httpStatus": 401, "path": "system.whoami"},
        1: {"code": "BAD_REQUEST", "httpStatus": 400, "path": "probe.sleep"},
        2: {"code": "NOT_FOUND", "httpStatus": 404, "path": "nope.nothing"},
    }


async def test_streamed_batch_can_be_asked_for_with_accept(http: httpx.AsyncClient) -> None:
    """httpBatchStreamLink's ``streamHeader: "accept"`` option sends ``accept`` instead of ``trpc-accept``."""
    response = await http.get(
        "system.health,system.health", params={"batch": "1"}, headers={"accept": "application/jsonl"}
    )
    assert response.text.splitlines()[0] == '{"0":[[0],[null,0,0]],"1":[[0],[null,0,1]]}'


async def test_streamed_batch_of_mutations(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "probe.bump,probe.bump", params={"batch": "1"}, headers={**JSONL, "content-type": "application/json"}
    )
    lines = response.text.splitlines()
    assert lines[0] == '{"0":[[0],[null,0,0]],"1":[[0],[null,0,1]]}'
    assert len(lines) == 3


async def test_subscription_sends_connected_events_with_ids_and_return(http: httpx.AsyncClient) -> None:
    response = await http.get("system.clock", params=q({"intervalMs": 10, "count": 3}), headers=USER_AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache, no-transform"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["vary"] == "trpc-accept, accept"
    assert response.text.startswith('event: connected\ndata: {"reconnectAfterInactivityMs":5000}\n\n\n')
    assert response.text.endswith("event: return\ndata: \n\n\n")
    events = [event for event in events_of(response.text) if event.get("event") != "ping"]
    assert [event.get("event") for event in events] == ["connected", None, None, None, "return"]
    data = events[1:4]
    assert [event["id"] for event in data] == ["1", "2", "3"]
    assert [json.loads(event["data"])["seq"] for event in data] == [1, 2, 3]
    assert all(json.loads(event["data"])["at"].endswith("Z") for event in data)


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        (q({"intervalMs": 10, "count": 5}), {"last-event-id": "3"}),
        (q({"intervalMs": 10, "count": 5, "lastEventId": "3"}), {}),
        (q({"intervalMs": 10, "count": 5}, lastEventId="3"), {}),
        (q({"intervalMs": 10, "count": 5}, **{"Last-Event-Id": "3"}), {}),
        (q({"intervalMs": 10, "count": 5, "lastEventId": "1"}), {"last-event-id": "3"}),
    ],
)
async def test_subscription_resumes_after_the_last_event_id(
    http: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = await http.get("system.clock", params=params, headers={**USER_AUTH, **headers})
    ids = [event["id"] for event in events_of(response.text) if "id" in event]
    assert ids == ["4", "5"]


async def test_subscription_sends_pings_while_idle(http: httpx.AsyncClient) -> None:
    response = await http.get("system.clock", params=q({"intervalMs": 300, "count": 2}), headers=USER_AUTH)
    kinds = [event.get("event", "data") for event in events_of(response.text)]
    assert kinds[0] == "connected"
    assert kinds[-1] == "return"
    assert kinds.count("ping") >= 2
    assert "event: ping\ndata: \n\n\n" in response.text


async def test_subscription_error_midway_is_a_serialized_error(http: httpx.AsyncClient) -> None:
    response = await http.get("probe.stream", params=q({"failAfter": 2, "code": "UNPROCESSABLE_CONTENT", "token": "a"}))
    events = [event for event in events_of(response.text) if event.get("event") != "ping"]
    assert [event.get("id") for event in events[1:3]] == ["1", "2"]
    last = events[-1]
    assert last["event"] == "serialized-error"
    assert json.loads(last["data"]) == {
        "message": "stream failed after 2",
        "code": -32022,
        "data": {"code": "UNPROCESSABLE_CONTENT", "httpStatus": 422, "path": "probe.stream"},
    }
    assert "event: return" not in response.text


async def test_subscription_input_error_is_a_serialized_error_after_connected(http: httpx.AsyncClient) -> None:
    response = await http.get("system.clock", params=q({"count": 0}), headers=USER_AUTH)
    assert response.status_code == 200
    connected, error = events_of(response.text)
    assert connected["event"] == "connected"
    assert error["event"] == "serialized-error"
    shape = json.loads(error["data"])
    assert shape["data"] == {"code": "BAD_REQUEST", "httpStatus": 400, "path": "system.clock"}
    assert shape["message"] == "Expected `int` >= 1 - at `$.count`"


async def test_subscription_without_key_is_unauthorized(http: httpx.AsyncClient) -> None:
    response = await http.get("system.clock", params=q({"count": 1}))
    shape = json.loads(events_of(response.text)[-1]["data"])
    assert shape["data"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "connection_params", [{"apiKey": USER_KEY}, {"authorization": f"Bearer {USER_KEY}"}], ids=["apiKey", "bearer"]
)
async def test_subscription_takes_the_key_from_connection_params(
    http: httpx.AsyncClient, connection_params: dict[str, str]
) -> None:
    params = q({"intervalMs": 10, "count": 1}, connectionParams=json.dumps(connection_params))
    response = await http.get("system.clock", params=params)
    assert [event.get("event") for event in events_of(response.text)] == ["connected", None, "return"]


@pytest.mark.parametrize(
    ("connection_params", "message"),
    [("{", "Not JSON-parsable query params"), ('{"apiKey": 1}', "Invalid connection params shape")],
)
async def test_malformed_connection_params_are_a_parse_error(
    http: httpx.AsyncClient, connection_params: str, message: str
) -> None:
    response = await http.get("system.clock", params=q({"count": 1}, connectionParams=connection_params))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == message
    assert response.json()["error"]["data"]["code"] == "PARSE_ERROR"


async def test_subscription_by_post_is_method_not_supported_in_the_stream(http: httpx.AsyncClient) -> None:
    response = await http.post("system.clock", json={"count": 1}, headers=USER_AUTH)
    shape = json.loads(events_of(response.text)[-1]["data"])
    assert shape["data"]["code"] == "METHOD_NOT_SUPPORTED"


def test_subscription_past_its_maximum_duration_ends_without_return_and_resumes() -> None:
    config = RpcConfig(sse_ping_interval_seconds=None, sse_max_duration_seconds=0.25)
    with serve(build_app(config)) as url, httpx.Client(base_url=f"{url}/trpc/", headers=USER_AUTH) as http:
        first = http.get("system.clock", params=q({"intervalMs": 100, "count": 6}))
        ids = [event["id"] for event in events_of(first.text) if "id" in event]
        assert "event: return" not in first.text
        assert ids[0] == "1"
        assert 2 <= len(ids) < 6
        second = http.get("system.clock", params=q({"intervalMs": 10, "count": 6}), headers={"last-event-id": ids[-1]})
    resumed = [event["id"] for event in events_of(second.text) if "id" in event]
    assert resumed == [str(n) for n in range(int(ids[-1]) + 1, 7)]
    assert second.text.endswith("event: return\ndata: \n\n\n")


def test_subscription_yielding_the_wrong_type_fails_as_internal_error() -> None:
    class Liar(ProcedureController):
        namespace = "system"

        @implements(system.CLOCK)
        async def clock(self, ctx: CallContext[object], input: ClockInput) -> AsyncIterator[Tracked[ClockEvent]]:
            yield tracked("1", cast(ClockEvent, HealthOutput(status="ok", version="1", database="ok")))

    router = rpc_router([Liar], Registry((system.CLOCK,)), InMemoryAuthenticator())
    with serve(Litestar([router])) as url:
        response = httpx.get(f"{url}/trpc/system.clock", params=q({}), headers=USER_AUTH)
    _connected, error = events_of(response.text)
    assert error["event"] == "serialized-error"
    assert json.loads(error["data"])["data"]["code"] == "INTERNAL_SERVER_ERROR"
