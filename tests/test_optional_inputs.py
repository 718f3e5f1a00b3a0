"""A procedure whose input fields all have defaults may be called with no input at all, as @trpc/client's
``.query()`` does: the input is then its defaults. A procedure with a required field still refuses that."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from schemas.registry import Access, ProcedureKind, all_optional
from schemas.router import APP_REGISTRY
from server.users import NewUser, create_user
from tests.conftest import ServedApp

OPTIONAL_QUERIES = [p for p in APP_REGISTRY if p.kind is ProcedureKind.QUERY and all_optional(p)]


def test_the_registry_has_queries_with_only_optional_fields() -> None:
    assert {p.path for p in OPTIONAL_QUERIES} >= {
        "chat.listConversations",
        "admin.topConversationsByCost",
        "admin.unpricedCalls",
        "admin.usageByModel",
        "admin.usageByProcedure",
    }


async def _keys(alice: NewUser) -> dict[Access, str]:
    return {Access.USER: alice.api_key, Access.ADMIN: (await create_user("root", is_admin=True)).api_key}


@pytest.mark.parametrize("absent", ["no input parameter", "input=null"])
async def test_every_query_with_only_optional_fields_answers_without_input(
    app_server: ServedApp, alice: NewUser, absent: str
) -> None:
    keys = await _keys(alice)
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc") as http:
        for procedure in OPTIONAL_QUERIES:
            params = {} if absent == "no input parameter" else {"input": "null"}
            headers = {"authorization": f"Bearer {keys[procedure.access]}"}
            response = await http.get(f"/{procedure.path}", params=params, headers=headers)
            assert response.status_code == 200, (procedure.path, response.text)
            with_defaults = await http.get(f"/{procedure.path}", params={"input": "{}"}, headers=headers)
            assert response.json() == with_defaults.json(), procedure.path


async def test_a_batch_mixes_calls_without_input_and_with_input(app_server: ServedApp, alice: NewUser) -> None:
    keys = await _keys(alice)
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc") as http:
        response = await http.get(
            "/admin.usageByModel,admin.topConversationsByCost",
            params={"batch": "1", "input": json.dumps({"1": {"limit": 3}})},
            headers={"authorization": f"Bearer {keys[Access.ADMIN]}"},
        )
    assert response.status_code == 200, response.text
    by_model, top = (envelope["result"]["data"] for envelope in response.json())
    assert by_model["models"] == []
    assert top["conversations"] == []


async def test_a_query_with_a_required_field_still_needs_its_input(app_server: ServedApp, alice: NewUser) -> None:
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc") as http:
        response = await http.get("/chat.getConversation", headers={"authorization": f"Bearer {alice.api_key}"})
    error: dict[str, Any] = response.json()["error"]
    assert (response.status_code, error["data"]["code"]) == (400, "BAD_REQUEST")
    assert "needs an input" in error["message"]
