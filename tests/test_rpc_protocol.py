"""The tRPC v11 HTTP protocol over real HTTP: envelopes, encoding, batching and every error path."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from importlib.metadata import version
from typing import Any

import httpx
import pytest
from litestar.enums import HttpMethod

from schemas.errors import ERROR_CODES, ErrorCode
from server.rpc import RpcConfig
from tests.rpc_testing import SECRET, USER, USER_KEY, InMemoryAuthenticator, build_app, serve

VERSION = version("tollbooth")  # the installed package: what the service reports

JSON = {"content-type": "application/json"}
USER_AUTH = {"authorization": f"Bearer {USER_KEY}"}
ECHO_INPUT = {
    "text": "héllo",
    "amountUsd": "0.00000005",
    "at": "2026-01-02T03:04:05.123456Z",
    "conversationId": "6f0c1f38-0d4c-4a43-a1e5-2f0c5f1d9a11",
    "tags": ["a", "b"],
    "nested": {"maxTokens": 5},
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(build_app()) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{base_url}/trpc/") as client:
        yield client


def q(value: Any, **params: str) -> dict[str, str]:
    return {**params, "input": json.dumps(value)}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str)
    assert isinstance(error["code"], int)
    assert error["data"]["httpStatus"] == response.status_code
    assert ERROR_CODES[ErrorCode(error["data"]["code"])].json_rpc == error["code"]
    assert "stack" not in error["data"]
    return error


async def test_query_answers_the_result_envelope(http: httpx.AsyncClient) -> None:
    response = await http.get("system.health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "trpc-accept, accept"
    assert response.json() == {"result": {"data": {"status": "ok", "version": VERSION, "database": "ok"}}}


async def test_mutation_round_trips_money_times_and_ids_as_strings(http: httpx.AsyncClient) -> None:
    response = await http.post("probe.echo", json=ECHO_INPUT, headers=USER_AUTH)
    assert response.status_code == 200
    data = response.json()["result"]["data"]
    assert Decimal(data["amountUsd"]) == Decimal("0.00000005")
    assert isinstance(data["amountUsd"], str)
    assert data["at"] == "2026-01-02T03:04:05.123456Z"
    assert data["conversationId"] == ECHO_INPUT["conversationId"]
    assert data == {**ECHO_INPUT, "amountUsd": data["amountUsd"]}


async def test_mutation_without_input_accepts_an_empty_body(http: httpx.AsyncClient) -> None:
    response = await http.post("probe.bump", headers=JSON)
    assert response.status_code == 200
    assert isinstance(response.json()["result"]["data"]["value"], int)


async def test_percent_encoded_path_is_decoded(http: httpx.AsyncClient) -> None:
    response = await http.get("system%2Ehealth")
    assert response.status_code == 200


async def test_head_request_answers_204(http: httpx.AsyncClient) -> None:
    assert (await http.head("system.health")).status_code == 204


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ('{"text": 1}', "BAD_REQUEST", "Expected `str`, got `int` - at `$.text`"),
        ({**ECHO_INPUT, "nested": {"maxTokens": "5"}}, "BAD_REQUEST", "at `$.nested.maxTokens`"),
        ({**ECHO_INPUT, "nested": {"maxTokens": 500}}, "BAD_REQUEST", "<= 100 - at `$.nested.maxTokens`"),
        ({**ECHO_INPUT, "nested": {"max_tokens": 5}}, "BAD_REQUEST", "unknown field `max_tokens`"),
        ({**ECHO_INPUT, "surprise": True}, "BAD_REQUEST", "unknown field `surprise`"),
        (
            {k: v for k, v in ECHO_INPUT.items() if k != "amountUsd"},
            "BAD_REQUEST",
            "missing required field `amountUsd`",
        ),
        ({**ECHO_INPUT, "conversationId": "nope"}, "BAD_REQUEST", "Invalid UUID - at `$.conversationId`"),
        ({**ECHO_INPUT, "amountUsd": "lots"}, "BAD_REQUEST", "at `$.amountUsd`"),
        ([1, 2], "BAD_REQUEST", "Expected `object`, got `array`"),
        ("null", "BAD_REQUEST", "Expected `object`, got `null`"),
        ('{"text": ', "PARSE_ERROR", "not valid JSON"),
        ("{bad json}", "PARSE_ERROR", "not valid JSON"),
        ("", "BAD_REQUEST", "needs an input"),
    ],
)
async def test_invalid_input_is_rejected_naming_the_field(
    http: httpx.AsyncClient, body: Any, code: str, fragment: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = await http.post("probe.echo", content=content, headers={**JSON, **USER_AUTH})
    error = error_of(response)
    assert error["data"]["code"] == code
    assert response.status_code == 400
    assert fragment in error["message"]
    assert error["data"]["path"] == "probe.echo"


DEEP = 5_000
"""Deeper than msgspec recurses (Python's recursion limit): it raises RecursionError rather than a DecodeError."""


@pytest.fixture
def default_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit, which the server runs with. The limit is per process, and the server under
    test runs in this one: a test that raised it and left it raised (mypy run in-process sets 16,384) would let
    msgspec decode DEEP levels, or overflow the C stack."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    yield
    sys.setrecursionlimit(previous)


@pytest.mark.usefixtures("default_recursion_limit")
@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "system.health", {"input": "[" * DEEP + "]" * DEEP}, None),
        ("GET", "system.health", {"input": '{"a":' * DEEP}, None),
        ("GET", "system.whoami", {"input": '{"x":' + "[" * DEEP + "]" * DEEP + "}"}, None),
        ("POST", "probe.bump", {}, "[" * DEEP + "]" * DEEP),
    ],
)
async def test_input_nested_too_deeply_is_a_parse_error(
    http: httpx.AsyncClient, method: str, path: str, params: dict[str, str], body: str | None
) -> None:
    response = await http.request(method, path, params=params, content=body, headers={**JSON, **USER_AUTH})
    assert response.status_code == 400
    error = error_of(response)
    assert error["data"]["code"] == "PARSE_ERROR"
    assert error["message"] == "Input is not valid JSON: nested too deeply"


@pytest.mark.usefixtures("default_recursion_limit")
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_batch_input_nested_too_deeply_is_a_parse_error_of_each_call(
    http: httpx.AsyncClient, method: str
) -> None:
    """The batch object is decoded before anything else (authentication included): it used to answer 500."""
    deep = '{"0":' + "[" * DEEP + "]" * DEEP + "}"
    if method == "GET":
        response = await http.get("system.health,probe.adminOnly", params={"batch": "1", "input": deep})
        expected = ["PARSE_ERROR", "UNAUTHORIZED"]  # a call's access is checked before its input, as in tRPC
    else:
        response = await http.post("probe.bump,probe.bump", params={"batch": "1"}, content=deep, headers=JSON)
        expected = ["PARSE_ERROR", "PARSE_ERROR"]
    assert response.status_code in (400, 207)
    assert [entry["error"]["data"]["code"] for entry in response.json()] == expected


@pytest.mark.usefixtures("default_recursion_limit")
async def test_resumed_subscription_input_nested_too_deeply_is_a_parse_error(http: httpx.AsyncClient) -> None:
    response = await http.get("probe.stream", params={"input": "[" * DEEP + "]" * DEEP}, headers={"last-event-id": "1"})
    assert response.status_code == 200
    error_event = response.text.split("event: serialized-error\ndata: ", 1)[1]
    assert json.loads(error_event)["data"]["code"] == "PARSE_ERROR"


async def test_query_input_errors_come_from_the_query_string(http: httpx.AsyncClient) -> None:
    response = await http.get("probe.sleep", params=q({"ms": "soon", "value": 1}))
    assert error_of(response)["message"] == "Expected `int`, got `str` - at `$.ms`"
    missing = await http.get("probe.sleep")
    assert "needs an input" in error_of(missing)["message"]
    assert error_of(await http.get("probe.sleep", params={"input": "{"}))["data"]["code"] == "PARSE_ERROR"


async def test_procedure_without_input_rejects_one(http: httpx.AsyncClient) -> None:
    assert (await http.get("system.health", params=q(None))).status_code == 200
    response = await http.get("system.health", params=q({"verbose": True}))
    assert error_of(response)["message"] == 'Procedure "system.health" takes no input'


async def test_unknown_procedure_is_not_found(http: httpx.AsyncClient) -> None:
    for path, shown in [("nope.nothing", "nope.nothing"), ("system", "system"), ("a/b", "a/b"), ("", "")]:
        response = await http.get(path)
        assert response.status_code == 404
        error = error_of(response)
        assert error["message"] == f'No procedure found on path "{shown}"'
        assert error["data"] == {"code": "NOT_FOUND", "httpStatus": 404, "path": shown}


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "system.health", "query"),
        ("GET", "probe.bump", "mutation"),
        ("PUT", "probe.bump", "mutation"),
        ("DELETE", "system.health", "query"),
        ("PATCH", "nope.nothing", None),
    ],
)
async def test_wrong_method_is_method_not_supported(
    http: httpx.AsyncClient, method: str, path: str, kind: str | None
) -> None:
    response = await http.request(method, path, headers=JSON)
    error = error_of(response)
    if kind is None:
        assert error["data"]["code"] == "NOT_FOUND"
        return
    assert response.status_code == 405
    assert error["message"] == f'Unsupported {method}-request to {kind} procedure at path "{path}"'


@pytest.mark.parametrize("method", sorted(set(HttpMethod) - {HttpMethod.OPTIONS, HttpMethod.HEAD}))
@pytest.mark.parametrize("path", ["system.health", "probe.bump", "nope.nothing", "system.health,probe.bump?batch=1"])
async def test_every_method_litestar_routes_answers_with_an_envelope(
    http: httpx.AsyncClient, method: HttpMethod, path: str
) -> None:
    """OPTIONS is Litestar's (204 with `allow`, or the CORS preflight), HEAD is 204 as in tRPC; CONNECT is not a
    method Litestar can route at all."""
    response = await http.request(method.value, path, headers=JSON)
    assert response.status_code < 500
    body = response.json()
    for envelope in body if isinstance(body, list) else [body]:
        assert set(envelope) <= {"result", "error"}, envelope


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonfoo",
        "application/json-patch+json",
        "application/jsonl",
        "text/plain; application/json",
    ],
)
async def test_post_without_json_content_type_is_unsupported_media_type(
    http: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await http.post("probe.bump", content=b"{}", headers=headers)
    assert response.status_code == 415
    error = error_of(response)
    assert error["data"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert "path" not in error["data"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "APPLICATION/JSON;CHARSET=UTF-8", "application/json ;x=y"],
)
async def test_json_content_type_is_matched_case_insensitively_with_parameters(
    http: httpx.AsyncClient, content_type: str
) -> None:
    response = await http.post("probe.bump", headers={"content-type": content_type})
    assert response.status_code == 200


async def test_body_over_the_limit_is_payload_too_large(http: httpx.AsyncClient) -> None:
    huge = json.dumps({**ECHO_INPUT, "text": "x" * (65 * 1024)})
    response = await http.post("probe.echo", content=huge, headers={**JSON, **USER_AUTH})
    assert response.status_code == 413
    assert error_of(response)["data"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_chunked_body_over_the_limit_is_payload_too_large(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = await http.post("probe.echo", content=chunks(), headers={**JSON, **USER_AUTH})
    assert response.status_code == 413
    assert error_of(response)["data"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("code", list(ErrorCode))
async def test_raised_trpc_errors_keep_their_code_number_and_status(http: httpx.AsyncClient, code: ErrorCode) -> None:
    response = await http.get("probe.fail", params=q({"code": code.value, "message": "nope"}))
    info = ERROR_CODES[code]
    assert response.status_code == info.http_status
    assert response.json() == {
        "error": {
            "message": "nope",
            "code": info.json_rpc,
            "data": {"code": code.value, "httpStatus": info.http_status, "path": "probe.fail"},
        }
    }


async def test_unexpected_exception_is_a_generic_internal_error_that_leaks_nothing(http: httpx.AsyncClient) -> None:
    """The response says nothing of the exception (its type, message or stack); the server log keeps it all."""
    response = await http.get("probe.crash")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "Internal server error",
            "code": -32603,
            "data": {"code": "INTERNAL_SERVER_ERROR", "httpStatus": 500, "path": "probe.crash"},
        }
    }
    everything_sent = response.text + "".join(f"{name}: {value}" for name, value in response.headers.multi_items())
    for leak in (SECRET, "database password", "RuntimeError", "Traceback", "rpc_testing"):
        assert leak not in everything_sent


def test_debug_mode_adds_the_stack() -> None:
    with serve(build_app(RpcConfig(debug=True))) as url:
        response = httpx.get(f"{url}/trpc/probe.crash")
    assert response.status_code == 500
    assert "RuntimeError" in response.json()["error"]["data"]["stack"]


async def test_batch_of_results_answers_200_in_request_order(http: httpx.AsyncClient) -> None:
    inputs = {"0": {"ms": 30, "value": 0}, "2": {"ms": 0, "value": 1}}
    response = await http.get("probe.sleep,system.health,probe.sleep", params=q(inputs, batch="1"))
    assert response.status_code == 200
    body = response.json()
    assert [entry["result"]["data"] for entry in body] == [
        {"value": 0},
        {"status": "ok", "version": VERSION, "database": "ok"},
        {"value": 1},
    ]


async def test_batch_mixing_results_and_errors_answers_207(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "system.health,probe.sleep,nope.nothing", params=q({"1": {"ms": 0, "value": "x"}}, batch="1")
    )
    assert response.status_code == 207
    first, second, third = response.json()
    assert "result" in first
    assert second["error"]["data"] == {"code": "BAD_REQUEST", "httpStatus": 400, "path": "probe.sleep"}
    assert third["error"]["data"]["code"] == "NOT_FOUND"


async def test_batch_of_equal_errors_answers_their_status(http: httpx.AsyncClient) -> None:
    response = await http.get("system.whoami,system.whoami?batch=1")
    assert response.status_code == 401
    assert [entry["error"]["data"]["code"] for entry in response.json()] == ["UNAUTHORIZED", "UNAUTHORIZED"]


async def test_batch_of_mutations_reads_inputs_from_the_body(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "probe.bump,probe.echo?batch=1", content=json.dumps({"1": ECHO_INPUT}), headers={**JSON, **USER_AUTH}
    )
    assert response.status_code == 200
    bump, echo = response.json()
    assert isinstance(bump["result"]["data"]["value"], int)
    assert echo["result"]["data"]["text"] == "héllo"


async def test_batch_calls_run_concurrently(http: httpx.AsyncClient) -> None:
    inputs = {str(i): {"ms": 300, "value": i} for i in range(5)}
    paths = ",".join(["probe.sleep"] * 5)
    response = await http.get(paths, params=q(inputs, batch="1"))
    assert response.status_code == 200
    assert response.elapsed.total_seconds() < 1.0


async def test_batch_input_must_be_an_object(http: httpx.AsyncClient) -> None:
    response = await http.get("probe.sleep,probe.sleep", params=q([1, 2], batch="1"))
    assert response.status_code == 400
    assert [e["error"]["message"] for e in response.json()] == [
        '"input" needs to be an object when doing a batch call'
    ] * 2
    broken = await http.get("probe.sleep", params={"batch": "1", "input": "{"})
    assert broken.json()[0]["error"]["data"]["code"] == "PARSE_ERROR"


async def test_batch_mixing_queries_and_mutations_is_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.post("probe.bump,system.health?batch=1", headers=JSON, content=b"{}")
    assert response.status_code == 400
    error = error_of(response)
    assert error["message"] == "Cannot mix procedure types in call: mutation, query"
    assert "path" not in error["data"]


async def test_batch_over_the_maximum_size_is_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.get(",".join(["system.health"] * 9) + "?batch=1")
    assert response.status_code == 400
    assert error_of(response)["message"] == "A batch holds at most 8 calls; this one has 9"
    assert (await http.get(",".join(["system.health"] * 8) + "?batch=1")).status_code == 200


async def test_batched_subscription_is_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.get("system.clock", params=q({"0": {"count": 1}}, batch="1"), headers=USER_AUTH)
    assert response.json()[0]["error"]["message"] == "Cannot batch subscription calls"


async def test_streaming_request_must_be_batched(http: httpx.AsyncClient) -> None:
    response = await http.get("system.health", headers={"trpc-accept": "application/jsonl"})
    assert response.status_code == 400
    assert error_of(response)["message"] == "Streaming requests must be batched (you can do a batch of 1)"


def test_health_reports_a_degraded_database() -> None:
    from tests.rpc_testing import Services

    with serve(build_app(services=Services(database_up=False))) as url:
        response = httpx.get(f"{url}/trpc/system.health")
    assert response.json()["result"]["data"] == {"status": "degraded", "version": VERSION, "database": "unavailable"}


async def test_authenticator_is_asked_once_per_request() -> None:
    authenticator = InMemoryAuthenticator()
    with serve(build_app(authenticator=authenticator)) as url:
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{url}/trpc/system.whoami,system.whoami,system.health?batch=1", headers=USER_AUTH
            )
    assert response.status_code == 200
    assert [entry["result"]["data"]["name"] for entry in response.json()[:2]] == [USER.name, USER.name]
    assert authenticator.lookups == 1


def test_a_protocol_bug_still_answers_with_an_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.rpc.dispatch import Dispatcher

    def broken(*args: object) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(Dispatcher, "_check_request", broken)
    with serve(build_app()) as url:
        response = httpx.get(f"{url}/trpc/system.health")
    assert response.status_code == 500
    assert response.json()["error"]["data"] == {"code": "INTERNAL_SERVER_ERROR", "httpStatus": 500}
    assert SECRET not in response.text
