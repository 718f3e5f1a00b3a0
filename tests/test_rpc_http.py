"""What browsers and API tooling see: CORS for tRPC's headers, and an OpenAPI document listing every procedure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from schemas.registry import ProcedureKind
from tests.rpc_testing import ALLOWED_ORIGIN, TEST_REGISTRY, build_app, serve


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(build_app()) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def test_cors_preflight_allows_the_trpc_headers(http: httpx.AsyncClient) -> None:
    response = await http.options(
        "/trpc/probe.echo",
        headers={
            "origin": ALLOWED_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, trpc-accept, authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "trpc-accept", "authorization"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_cors_preflight_rejects_other_origins(http: httpx.AsyncClient) -> None:
    response = await http.options(
        "/trpc/probe.echo",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_cors_response_headers_on_a_call(http: httpx.AsyncClient) -> None:
    response = await http.get("/trpc/system.health", headers={"origin": ALLOWED_ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


async def openapi(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_openapi_lists_every_procedure_under_its_path_as_operation_id(http: httpx.AsyncClient) -> None:
    paths = (await openapi(http))["paths"]
    listed = {
        operation["operationId"]: (path, method)
        for path, item in paths.items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }
    expected_method = {ProcedureKind.QUERY: "get", ProcedureKind.MUTATION: "post", ProcedureKind.SUBSCRIPTION: "get"}
    assert listed == {p.path: (f"/trpc/{p.path}", expected_method[p.kind]) for p in TEST_REGISTRY}


async def test_openapi_describes_inputs_and_outputs_with_their_wire_names(http: httpx.AsyncClient) -> None:
    paths = (await openapi(http))["paths"]

    echo = paths["/trpc/probe.echo"]["post"]
    body_schema = echo["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["additionalProperties"] is False
    assert set(body_schema["required"]) == {"text", "amountUsd", "at", "conversationId"}
    nested = body_schema["properties"]["nested"]["anyOf"][0]
    assert nested["properties"]["maxTokens"] == {"type": "integer", "minimum": 1, "maximum": 100}
    result = echo["responses"]["200"]["content"]["application/json"]["schema"]
    data = result["properties"]["result"]["properties"]["data"]
    assert data["properties"]["amountUsd"]["type"] == "string"
    assert data["properties"]["conversationId"] == {"type": "string", "format": "uuid"}
    error = echo["responses"]["default"]["content"]["application/json"]["schema"]
    assert set(error["properties"]["error"]["properties"]) == {"message", "code", "data"}

    sleep = paths["/trpc/probe.sleep"]["get"]
    [parameter] = sleep["parameters"]
    assert parameter["name"] == "input"
    assert parameter["in"] == "query"
    assert set(parameter["content"]["application/json"]["schema"]["properties"]) == {"ms", "value"}

    health = paths["/trpc/system.health"]["get"]
    assert "parameters" not in health
    health_data = health["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["result"]
    assert set(health_data["properties"]["data"]["properties"]) == {"status", "version", "database"}

    clock = paths["/trpc/system.clock"]["get"]
    event = clock["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert set(event["properties"]) == {"seq", "at"}
    assert clock["tags"] == ["system"]


async def test_openapi_has_no_unresolved_references(http: httpx.AsyncClient) -> None:
    paths = (await openapi(http))["paths"]
    rpc = {path: item for path, item in paths.items() if path.startswith("/trpc/")}
    assert "$ref" not in str(rpc)
