"""The OpenAPI document at ``/schema/openapi.json`` and the docs page at ``/schema``, as the application serves them.

- the document passes ``openapi-spec-validator`` and every reference in it (``$ref``, discriminator mappings) resolves;
- ``openapi-typescript`` turns it into types that ``tsc --strict`` accepts, in the node_modules of
  tests/test_typescript_interop.py (so, as there, skipped without node or npm unless ``TOLLBOOTH_REQUIRE_NODE=1``);
- one operation per procedure, named by its path; USER and ADMIN procedures require the API key (HTTP bearer), PUBLIC
  ones nothing; an all-optional query input is an optional parameter; money is a string with ``MONEY_SCHEMA``'s pattern;
- the docs page names no outside host, and the app serves every script, stylesheet and icon it loads.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from openapi_spec_validator import validate

from schemas.codec import MONEY_SCHEMA
from schemas.registry import Access, ProcedureKind, all_optional
from schemas.router import APP_REGISTRY
from server.app import create_app
from server.rpc.openapi import API_KEY_SCHEME
from server.settings import Settings
from tests.test_typescript_interop import CLIENT_DIR, installed_node_modules

METHODS = {ProcedureKind.QUERY: "get", ProcedureKind.MUTATION: "post", ProcedureKind.SUBSCRIPTION: "get"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    """The real application, its lifespan (database, providers) not run: neither the document nor the page needs it."""
    return create_app(Settings.from_env({"DATA_DIR": str(tmp_path_factory.mktemp("openapi"))}))


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tollbooth.test") as client:
        yield client


@pytest.fixture
async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/schema/openapi.json")
    assert response.status_code == 200
    loaded: dict[str, Any] = response.json()
    return loaded


def _operation(document: dict[str, Any], path: str, kind: ProcedureKind) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][f"/trpc/{path}"][METHODS[kind]]
    return operation


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``node``, ``node`` included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nodes(item)


def _resolve(document: dict[str, Any], reference: str) -> Any:
    assert reference.startswith("#/"), reference
    target: Any = document
    for token in reference[2:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(target, dict), reference
        assert key in target, f"{reference} points at nothing"
        target = target[key]
    return target


# --- the document -------------------------------------------------------------------------------------------------


def test_the_document_passes_the_openapi_spec_validator(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    references = [node["$ref"] for node in _nodes(document) if isinstance(node.get("$ref"), str)]
    references += [
        target
        for node in _nodes(document)
        if isinstance(node.get("discriminator"), dict)
        for target in node["discriminator"].get("mapping", {}).values()
    ]
    for reference in references:
        _resolve(document, reference)
    # The tagged unions keep their discriminator, and so something to check above when a mapping comes back.
    assert any(isinstance(node.get("discriminator"), dict) for node in _nodes(document))


def test_every_procedure_is_one_operation_named_by_its_path(document: dict[str, Any]) -> None:
    listed = {
        operation["operationId"]: (path, method)
        for path, item in document["paths"].items()
        if path.startswith("/trpc/")
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }
    assert listed == {p.path: (f"/trpc/{p.path}", METHODS[p.kind]) for p in APP_REGISTRY}


def test_user_and_admin_procedures_require_the_api_key_and_public_ones_nothing(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][API_KEY_SCHEME]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    accesses = set()
    for procedure in APP_REGISTRY:
        operation = _operation(document, procedure.path, procedure.kind)
        accesses.add(procedure.access)
        if procedure.access is Access.PUBLIC:
            assert "security" not in operation, procedure.path
        else:
            assert operation["security"] == [{API_KEY_SCHEME: []}], procedure.path
    assert accesses == set(Access)  # every branch above was taken
    assert "security" not in document  # nothing applies to every operation (healthz, PUBLIC procedures)


def test_a_query_whose_input_is_all_optional_has_an_optional_input_parameter(document: dict[str, Any]) -> None:
    queries = [p for p in APP_REGISTRY if p.input is not None and p.kind is not ProcedureKind.MUTATION]
    for procedure in queries:
        [parameter] = _operation(document, procedure.path, procedure.kind)["parameters"]
        assert (parameter["name"], parameter["in"]) == ("input", "query")
        assert parameter["required"] is not all_optional(procedure), procedure.path
    assert {all_optional(p) for p in queries} == {True, False}


def test_money_is_a_string_with_the_money_pattern(document: dict[str, Any]) -> None:
    money = [node for node in _nodes(document) if node.get("format") == "decimal"]
    assert len(money) > 10
    for node in money:
        assert {key: node.get(key) for key in MONEY_SCHEMA} == MONEY_SCHEMA


# --- openapi-typescript -------------------------------------------------------------------------------------------


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, cwd=CLIENT_DIR, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def test_openapi_typescript_generates_types_that_compile(document: dict[str, Any], tmp_path: Path) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document), encoding="utf-8")
    types = tmp_path / "openapi.d.ts"
    with installed_node_modules() as node:
        cli = CLIENT_DIR / "node_modules" / "openapi-typescript" / "bin" / "cli.js"
        _run([node, str(cli), str(spec), "--output", str(types)], "openapi-typescript")
        tsc = CLIENT_DIR / "node_modules" / "typescript" / "bin" / "tsc"
        _run([node, str(tsc), "--strict", "--noEmit", str(types)], "tsc --strict over the generated types")

    text = types.read_text(encoding="utf-8")
    for procedure in APP_REGISTRY:
        assert f'    "{procedure.path}": {{\n' in text, procedure.path  # an entry of `operations`, by operation id
    assert 'type: "delta";' in text  # a tagged union's variants keep their literal tags


# --- the docs page ------------------------------------------------------------------------------------------------


class _Assets(HTMLParser):
    """The URLs a page loads: script sources and linked stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        url = attributes.get("src") if tag == "script" else attributes.get("href") if tag == "link" else None
        if url:
            self.urls.append(url)


async def test_the_docs_page_loads_every_asset_from_the_app(http: httpx.AsyncClient) -> None:
    page = await http.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text
    assert "https://" not in page.text
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.urls) == 4  # the Swagger UI bundle, its standalone preset, its stylesheet, the icon
    expected_types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in parser.urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = await http.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(expected_types[Path(url).suffix]), url
        assert len(asset.content) > 1000, url


async def test_the_docs_page_serves_only_its_own_assets(http: httpx.AsyncClient) -> None:
    for url in ("/schema/static/LICENSE", "/schema/static/swagger-editor-bundle.js", "/schema/static/..%2fcore.py"):
        assert (await http.get(url)).status_code == 404, url
