"""Malformed requests of every kind get a tRPC error envelope with a 4xx status, never a 500 or a non-tRPC body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import ERROR_CODES, ErrorCode
from tests.rpc_testing import ADMIN_KEY, USER_KEY, build_app, serve

# Procedures whose valid inputs could legitimately be slow or fail on purpose are left out of the pool.
PATHS = ["system.health", "system.whoami", "probe.echo", "probe.bump", "probe.adminOnly", "probe.stream"]

# Times msgspec parses but that overflow once converted to UTC, or that no database column holds.
EXTREME_DATES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999Z",
    "0000-01-01T00:00:00Z",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["\x00", "a\x00b", *EXTREME_DATES]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["text", "amountUsd", "at", "conversationId", "tags", "nested", "maxTokens", "failAfter", "code", "count", "0", "1"]
)
near_valid_objects = st.dictionaries(field_names, json_values, max_size=6)


def _nest(depth: int, opener: str, closer: str, wrapper: str) -> str:
    """JSON (or a truncation of it) nested ``depth`` deep. msgspec stops at Python's recursion limit with a
    RecursionError; while Hypothesis runs a test it sets that limit to the test's depth + 2,000, so 4,000 is past it
    (and still fits in a URL)."""
    return wrapper.replace("@", opener * depth + closer * depth)


deeply_nested = st.builds(
    _nest,
    depth=st.sampled_from([2, 4_000]),
    opener=st.sampled_from(["[", '{"a":']),
    closer=st.sampled_from(["]", "}", ""]),
    wrapper=st.sampled_from(["@", '{"0":@}', '{"0":{},"1":@}', '{"text":@}', '{"nested":@}']),
)
inputs = st.one_of(
    st.none(),
    json_values.map(json.dumps),
    near_valid_objects.map(json.dumps),
    st.dictionaries(st.sampled_from(["0", "1", "2", "x"]), near_valid_objects, max_size=3).map(json.dumps),
    deeply_nested,
    st.text(max_size=40),
    st.text(alphabet='\x00a"{}[]:,\\', max_size=20),
    st.binary(max_size=40).map(lambda raw: raw.decode("latin-1")),
)
paths = st.one_of(
    st.sampled_from(PATHS),
    st.lists(st.sampled_from([*PATHS, "nope", ""]), min_size=1, max_size=10).map(",".join),
    # "." and ".." are dot-segments: the client resolves them out of /trpc/ before sending, so no tRPC client can
    # send them as a procedure path.
    st.text(alphabet="abcz.,%/-_ 0\x00", max_size=20).filter(lambda path: path not in {".", ".."}),
)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with serve(build_app()) as url, httpx.Client(base_url=f"{url}/trpc/", timeout=10) as client:
        yield client


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of a complete SSE stream, each as its fields (a field repeated keeps its last value)."""
    assert text.endswith("\n\n"), f"the stream ends inside an event: {text[-80:]!r}"
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            if fields:
                events.append(fields)
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    return events


def assert_error_envelope(envelope: Any, status: int | None = None) -> None:
    assert set(envelope) == {"error"}, envelope
    error = envelope["error"]
    code = ErrorCode(error["data"]["code"])
    assert error["code"] == ERROR_CODES[code].json_rpc
    assert isinstance(error["message"], str)
    assert error["data"]["httpStatus"] == ERROR_CODES[code].http_status
    if status is not None:
        assert error["data"]["httpStatus"] == status


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "TRACE"]),
    path=paths,
    batch=st.booleans(),
    streamed=st.booleans(),
    input=inputs,
    content_type=st.sampled_from(
        [None, "application/json", "text/plain", "application/json; charset=utf-8", "Application/JSON", "x"]
    ),
    authorization=st.sampled_from([None, f"Bearer {USER_KEY}", f"Bearer {ADMIN_KEY}", "Bearer nope", "Basic x", ""]),
    connection_params=st.one_of(st.none(), st.text(max_size=20), json_values.map(json.dumps)),
)
def test_malformed_requests_never_cause_a_server_error(
    http: httpx.Client,
    method: str,
    path: str,
    batch: bool,
    streamed: bool,
    input: str | None,
    content_type: str | None,
    authorization: str | None,
    connection_params: str | None,
) -> None:
    params: dict[str, str] = {}
    if batch:
        params["batch"] = "1"
    if connection_params is not None:
        params["connectionParams"] = connection_params
    headers: dict[str, str] = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if authorization:
        headers["authorization"] = authorization
    if streamed:
        headers["trpc-accept"] = "application/jsonl"
    content = None
    if input is not None:
        if method == "GET":
            params["input"] = input
        else:
            content = input.encode()
    response = http.request(
        method,
        path.replace("/", "%2F").replace(" ", "%20").replace("\x00", "%00"),
        params=params,
        headers=headers,
        content=content,
    )

    assert response.request.url.path.startswith("/trpc/"), response.request.url
    assert response.status_code < 500, response.text
    media_type = response.headers.get("content-type", "")
    if media_type.startswith("text/event-stream"):
        assert response.status_code == 200
        events = sse_events(response.text)
        assert len(events) >= 2, events
        assert events[0]["event"] == "connected"
        # A subscription ends with `return` or, after an error, `serialized-error`; nothing follows either.
        *middle, last = events[1:]
        assert last.get("event") in ("return", "serialized-error"), events
        assert all(event.get("event") not in ("return", "serialized-error") for event in middle), events
        if last["event"] == "serialized-error":
            assert_error_envelope({"error": json.loads(last["data"])})
        return
    assert media_type == "application/json"
    lines = response.text.splitlines()
    if streamed and batch and response.status_code == 200 and lines and lines[0].startswith('{"0":[[0],'):
        for line in lines[1:]:
            _index, status, [[envelope]] = json.loads(line)
            assert status == 0
            if "error" in envelope:
                assert_error_envelope(envelope)
        return
    body = response.json()
    envelopes = body if isinstance(body, list) else [body]
    for envelope in envelopes:
        if "result" in envelope:
            assert set(envelope) == {"result"}
        else:
            assert_error_envelope(envelope, None if isinstance(body, list) else response.status_code)
