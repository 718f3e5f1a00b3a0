"""Access control of every procedure over HTTP, and the admin and conversation reads through the typed client."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from schemas.admin import (
    ConversationCostInput,
    TopConversationsInput,
    UnpricedCallsInput,
    UsageByDateRangeInput,
    UsageByModelInput,
    UsageByProcedureInput,
)
from schemas.chat import SendMessageInput
from schemas.conversations import GetConversationInput, ListConversationsInput
from schemas.registry import Access, Procedure, ProcedureKind
from schemas.router import APP_REGISTRY
from schemas.validation import Position, encode_cursor
from server.users import NewUser, create_user
from tests.conftest import ServedApp
from tollbooth_client import TollboothClient, TRPCClientError

GUARDED = [p for p in APP_REGISTRY if p.access is not Access.PUBLIC and p.kind is not ProcedureKind.SUBSCRIPTION]


@pytest.fixture
async def users(db: None) -> dict[str, NewUser]:
    return {
        "alice": await create_user("alice"),
        "bob": await create_user("bob"),
        "admin": await create_user("root", is_admin=True),
    }


@pytest.fixture
async def http(app_server: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc") as client:
        yield client


async def _call(
    http: httpx.AsyncClient, procedure: Procedure[object, object], key: str | None, *, authorization: str | None = None
) -> httpx.Response:
    """Call ``procedure`` with ``Authorization: Bearer <key>``, or with the ``authorization`` header given as is."""
    if authorization is None and key:
        authorization = f"Bearer {key}"
    headers = {"authorization": authorization} if authorization is not None else {}
    if procedure.kind is ProcedureKind.QUERY:
        return await http.get(f"/{procedure.path}", headers=headers)
    return await http.post(f"/{procedure.path}", headers={**headers, "content-type": "application/json"})


# Authorization headers that must not authenticate; {key} is replaced by alice's valid key.
BAD_AUTHORIZATIONS = [
    None,
    "Bearer tb_wrong",
    "Bearer",
    "Basic YWxpY2U6c2VjcmV0",  # alice:secret
    "Basic {key}",  # a valid key under another scheme
    "{key}",  # a valid key without a scheme
]


@pytest.mark.parametrize("procedure", GUARDED, ids=lambda p: p.path)
@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS)
async def test_a_missing_or_wrong_key_is_unauthorized(
    http: httpx.AsyncClient,
    users: dict[str, NewUser],
    procedure: Procedure[object, object],
    authorization: str | None,
) -> None:
    header = None if authorization is None else authorization.format(key=users["alice"].api_key)
    response = await _call(http, procedure, None, authorization=header)
    assert response.status_code == 401
    assert response.json()["error"]["data"]["code"] == "UNAUTHORIZED"


GUARDED_SUBSCRIPTIONS = [
    p for p in APP_REGISTRY if p.access is not Access.PUBLIC and p.kind is ProcedureKind.SUBSCRIPTION
]


@pytest.mark.parametrize("procedure", GUARDED_SUBSCRIPTIONS, ids=lambda p: p.path)
@pytest.mark.parametrize("authorization", [None, "Bearer tb_wrong", "Basic {key}"])
async def test_a_subscription_without_a_valid_key_is_unauthorized(
    http: httpx.AsyncClient,
    users: dict[str, NewUser],
    procedure: Procedure[object, object],
    authorization: str | None,
) -> None:
    """Over SSE the error comes as the stream's one `serialized-error` event, after `connected` (as in tRPC)."""
    headers = {} if authorization is None else {"authorization": authorization.format(key=users["alice"].api_key)}
    response = await http.get(f"/{procedure.path}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block.strip()]
    assert blocks[0].startswith("event: connected\n")
    assert len(blocks) == 2, blocks
    event, data = blocks[1].strip("\n").split("\n", 1)
    assert event == "event: serialized-error"
    error = json.loads(data.removeprefix("data: "))
    assert error["data"] == {"code": "UNAUTHORIZED", "httpStatus": 401, "path": procedure.path}
    assert error["code"] == -32001


@pytest.mark.parametrize("procedure", [p for p in GUARDED if p.access is Access.ADMIN], ids=lambda p: p.path)
async def test_a_user_key_on_an_admin_procedure_is_forbidden(
    http: httpx.AsyncClient, users: dict[str, NewUser], procedure: Procedure[object, object]
) -> None:
    response = await _call(http, procedure, users["alice"].api_key)
    assert response.status_code == 403
    assert response.json()["error"]["data"]["code"] == "FORBIDDEN"


async def test_every_admin_procedure_answers_an_admin(app_server: ServedApp, users: dict[str, NewUser]) -> None:
    async with TollboothClient(app_server.url, api_key=users["alice"].api_key) as alice:
        sent = await alice.chat.send_message(SendMessageInput(message="How much is this?", model="gpt-4o"))
    assert sent.conversation_id is not None
    assert sent.cost_usd is not None
    now = datetime.now(UTC)
    window = {"start": now - timedelta(days=1), "end": now + timedelta(days=1)}
    async with TollboothClient(app_server.url, api_key=users["admin"].api_key) as admin:
        cost = await admin.admin.get_conversation_cost(ConversationCostInput(conversation_id=sent.conversation_id))
        by_day = await admin.admin.usage_by_date_range(
            UsageByDateRangeInput(**window, granularity="day", time_zone="Europe/Berlin")
        )
        by_model = await admin.admin.usage_by_model(UsageByModelInput(**window))
        by_procedure = await admin.admin.usage_by_procedure(UsageByProcedureInput())
        top = await admin.admin.top_conversations_by_cost(TopConversationsInput(limit=5))
        unpriced = await admin.admin.unpriced_calls(UnpricedCallsInput())
    assert cost.totals.total_cost_usd == sent.cost_usd
    assert [row.cost_usd for row in cost.rows] == [sent.cost_usd]
    assert sum(bucket.cost_usd for bucket in by_day.buckets) == by_day.overall.cost_usd == sent.cost_usd
    assert [(m.model, m.cost_usd) for m in by_model.models] == [("gpt-4o", sent.cost_usd)]
    assert [p.procedure for p in by_procedure.procedures] == ["chat.sendMessage"]
    assert [(t.conversation_id, t.owner_name) for t in top.conversations] == [(sent.conversation_id, "alice")]
    assert unpriced.unpriced_calls == 0


async def test_conversations_are_read_by_their_owner_only(app_server: ServedApp, users: dict[str, NewUser]) -> None:
    async with TollboothClient(app_server.url, api_key=users["alice"].api_key) as alice:
        sent = await alice.chat.send_message(SendMessageInput(message="Mine", model="gpt-4o"))
        assert sent.conversation_id is not None
        listed = await alice.chat.list_conversations(ListConversationsInput())
        detail = await alice.chat.get_conversation(GetConversationInput(conversation_id=sent.conversation_id))
    assert [c.conversation_id for c in listed.conversations] == [sent.conversation_id]
    assert [m.role for m in detail.messages] == ["user", "assistant"]
    assert detail.totals.total_cost_usd == sent.cost_usd
    async with TollboothClient(app_server.url, api_key=users["bob"].api_key) as bob:
        assert (await bob.chat.list_conversations(ListConversationsInput())).conversations == []
        for conversation_id in (sent.conversation_id, uuid.uuid4()):
            with pytest.raises(TRPCClientError) as raised:
                await bob.chat.get_conversation(GetConversationInput(conversation_id=conversation_id))
            assert (raised.value.code, raised.value.http_status) == ("NOT_FOUND", 404)
            assert str(conversation_id) in raised.value.message


async def test_an_invalid_admin_window_is_a_bad_request_naming_the_field(
    http: httpx.AsyncClient, users: dict[str, NewUser]
) -> None:
    response = await http.get(
        "/admin.usageByModel",
        params={"input": '{"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}'},
        headers={"authorization": f"Bearer {users['admin'].api_key}"},
    )
    assert response.status_code == 400
    assert "start" in response.json()["error"]["message"]


# Times msgspec parses (any year 1-9999, offsets up to ±23:59) that overflow once converted to UTC, or that the
# database or the bucketing arithmetic cannot hold: all used to answer 500.
OUT_OF_RANGE_TIMES = [
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
]


async def test_a_cursor_out_of_range_is_a_bad_request_naming_the_field(
    app_server: ServedApp, http: httpx.AsyncClient, users: dict[str, NewUser]
) -> None:
    async with TollboothClient(app_server.url, api_key=users["admin"].api_key) as admin:
        sent = await admin.chat.send_message(SendMessageInput(message="A conversation to page through"))
    conversation = str(sent.conversation_id)
    auth = {"authorization": f"Bearer {users['admin'].api_key}"}
    for at in OUT_OF_RANGE_TIMES:
        cursor = encode_cursor(Position(at=at, id=uuid.uuid4()))
        for path, input in [
            ("chat.listConversations", {"cursor": cursor}),
            ("chat.getConversation", {"conversationId": conversation, "cursor": cursor}),
            ("admin.getConversationCost", {"conversationId": conversation, "cursor": cursor}),
            ("admin.unpricedCalls", {"cursor": cursor}),
        ]:
            response = await http.get(f"/{path}", params={"input": json.dumps(input)}, headers=auth)
            assert response.status_code == 400, (path, at, response.text)
            error = response.json()["error"]
            assert error["data"]["code"] == "BAD_REQUEST"
            assert error["message"] == "`cursor` is not a cursor this server returned"


async def test_an_admin_window_out_of_range_is_a_bad_request_naming_the_field(
    http: httpx.AsyncClient, users: dict[str, NewUser]
) -> None:
    auth = {"authorization": f"Bearer {users['admin'].api_key}"}
    usual = datetime(2026, 1, 1, tzinfo=UTC)
    windows: list[tuple[str, dict[str, datetime]]] = [
        *(("start", {"start": at, "end": usual}) for at in OUT_OF_RANGE_TIMES),
        *(("end", {"start": usual, "end": at}) for at in OUT_OF_RANGE_TIMES),
        ("start", {"start": OUT_OF_RANGE_TIMES[0]}),
        ("end", {"end": OUT_OF_RANGE_TIMES[1]}),
    ]
    for field, window in windows:
        for path, extra in [
            ("admin.usageByDateRange", {"granularity": "day", "timeZone": "Pacific/Kiritimati"}),
            ("admin.usageByModel", {}),
            ("admin.usageByProcedure", {}),
            ("admin.topConversationsByCost", {}),
            ("admin.unpricedCalls", {}),
        ]:
            if path == "admin.usageByDateRange" and len(window) < 2:
                continue  # it needs both ends
            input = {**{k: v.isoformat() for k, v in window.items()}, **extra}
            response = await http.get(f"/{path}", params={"input": json.dumps(input)}, headers=auth)
            assert response.status_code == 400, (path, input, response.text)
            error = response.json()["error"]
            assert error["data"]["code"] == "BAD_REQUEST"
            assert error["message"] == f"`{field}` must be a time in the years 1970 to 9000 (UTC)", (path, input)
