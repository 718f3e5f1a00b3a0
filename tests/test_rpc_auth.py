"""Access control enforced by the protocol from each procedure's registry entry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.rpc_testing import ADMIN, ADMIN_KEY, SECRET, USER, USER_KEY, InMemoryAuthenticator, build_app, serve


@pytest.fixture(scope="module")
def authenticator() -> InMemoryAuthenticator:
    return InMemoryAuthenticator()


@pytest.fixture(scope="module")
def base_url(authenticator: InMemoryAuthenticator) -> Iterator[str]:
    with serve(build_app(authenticator=authenticator)) as url:
        yield url


@pytest.fixture
async def http(base_url: str, authenticator: InMemoryAuthenticator) -> AsyncIterator[httpx.AsyncClient]:
    authenticator.lookups = 0
    authenticator.fail = False
    async with httpx.AsyncClient(base_url=f"{base_url}/trpc/") as client:
        yield client


async def test_user_procedure_sees_the_authenticated_caller(http: httpx.AsyncClient) -> None:
    response = await http.get("system.whoami", headers={"authorization": f"Bearer {USER_KEY}"})
    assert response.json() == {"result": {"data": {"userId": str(USER.user_id), "name": USER.name, "isAdmin": False}}}


async def test_bearer_scheme_is_case_insensitive(http: httpx.AsyncClient) -> None:
    response = await http.get("system.whoami", headers={"authorization": f"bearer {ADMIN_KEY}"})
    assert response.json()["result"]["data"]["isAdmin"] is True
    assert response.json()["result"]["data"]["name"] == ADMIN.name


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Missing API key: send `Authorization: Bearer <key>`"),
        ("Bearer wrong-key", "Invalid API key"),
        (f"Basic {USER_KEY}", "Unsupported authorization: send `Authorization: Bearer <key>`"),
        ("Bearer", "Unsupported authorization: send `Authorization: Bearer <key>`"),
    ],
)
async def test_user_procedure_without_a_valid_key_is_unauthorized(
    http: httpx.AsyncClient, authorization: str | None, message: str
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = await http.get("system.whoami", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["message"] == message
    assert error["code"] == -32001
    assert error["data"] == {"code": "UNAUTHORIZED", "httpStatus": 401, "path": "system.whoami"}


async def test_admin_procedure_with_a_user_key_is_forbidden(http: httpx.AsyncClient) -> None:
    response = await http.get("probe.adminOnly", headers={"authorization": f"Bearer {USER_KEY}"})
    assert response.status_code == 403
    assert response.json()["error"]["data"] == {"code": "FORBIDDEN", "httpStatus": 403, "path": "probe.adminOnly"}


async def test_admin_procedure_with_an_admin_key_answers(http: httpx.AsyncClient) -> None:
    response = await http.get("probe.adminOnly", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.json() == {"result": {"data": {"value": 1}}}


async def test_admin_procedure_without_key_is_unauthorized_not_forbidden(http: httpx.AsyncClient) -> None:
    assert (await http.get("probe.adminOnly")).status_code == 401


async def test_public_procedure_does_not_authenticate(
    http: httpx.AsyncClient, authenticator: InMemoryAuthenticator
) -> None:
    response = await http.get("system.health", headers={"authorization": "Bearer wrong-key"})
    assert response.status_code == 200
    assert authenticator.lookups == 0


async def test_access_is_checked_before_the_input(http: httpx.AsyncClient) -> None:
    response = await http.post("probe.echo", content=b"{not json", headers={"content-type": "application/json"})
    assert response.json()["error"]["data"]["code"] == "UNAUTHORIZED"


async def test_failing_authenticator_is_an_internal_error_that_leaks_nothing(
    http: httpx.AsyncClient, authenticator: InMemoryAuthenticator
) -> None:
    authenticator.fail = True
    response = await http.get("system.whoami", headers={"authorization": f"Bearer {USER_KEY}"})
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "Internal server error"
    assert SECRET not in response.text
