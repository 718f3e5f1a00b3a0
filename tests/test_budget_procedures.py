"""The budget procedures end to end over HTTP: ``admin.setBudget``, ``admin.deleteBudget``, ``admin.listBudgets``,
``admin.listAlerts`` and ``chat.getBudgetStatus``, with the spend that real calls settle into them."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from schemas.budgets import (
    DeleteBudgetInput,
    ListAlertsInput,
    ListBudgetsInput,
    SetBudgetInput,
)
from schemas.chat import SendMessageInput
from schemas.money import Money
from server.users import NewUser, create_user
from tests.conftest import ServedApp, app_database, fetch_rows
from tollbooth_client import TollboothClient, TRPCClientError


@pytest.fixture
async def root(db: None) -> NewUser:
    return await create_user("root", is_admin=True)


@pytest.fixture
async def admin(app_server: ServedApp, root: NewUser) -> AsyncIterator[TollboothClient]:
    async with TollboothClient(app_server.url, api_key=root.api_key, batching=False) as client:
        yield client


@pytest.fixture
async def http(app_server: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc") as client:
        yield client


def _today() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def _spend(client: TollboothClient, conversation_id: uuid.UUID | None = None) -> tuple[Money, uuid.UUID]:
    sent = await client.chat.send_message(
        SendMessageInput(message="What does this cost?", model="gpt-4o", conversation_id=conversation_id)
    )
    assert sent.cost_usd is not None
    assert sent.cost_usd > 0
    assert sent.conversation_id is not None
    return sent.cost_usd, sent.conversation_id


async def test_set_budget_creates_it_with_defaults_and_a_change_keeps_the_period_spend(
    admin: TollboothClient, client: TollboothClient
) -> None:
    created = await admin.admin.set_budget(SetBudgetInput(scope="global", period="day", limit_usd=Money("10")))
    assert (created.scope, created.subject_id, created.period, created.limit_usd) == ("global", None, "day", 10)
    assert (created.hard, created.alert_thresholds) == (True, [0.5, 0.8, 1.0])
    assert (created.period_start, created.resets_at) == (_today(), _today() + datetime.timedelta(days=1))
    assert (created.spent_usd, created.reserved_usd, created.remaining_usd) == (0, 0, 10)

    cost, _ = await _spend(client)
    changed = await admin.admin.set_budget(
        SetBudgetInput(
            scope="global", period="day", limit_usd=Money("20.5"), hard=False, alert_thresholds=[1.0, 0.25, 0.25, 2]
        )
    )
    assert changed.budget_id == created.budget_id
    assert (changed.limit_usd, changed.hard, changed.alert_thresholds) == (Decimal("20.5"), False, [0.25, 1.0, 2.0])
    assert (changed.spent_usd, changed.reserved_usd) == (cost, 0)
    assert changed.remaining_usd == Decimal("20.5") - cost
    [stored] = await fetch_rows("SELECT alert_thresholds FROM budgets")
    assert stored["alert_thresholds"] == [Decimal("0.25"), Decimal("1"), Decimal("2")]
    [listed] = (await admin.admin.list_budgets(ListBudgetsInput())).budgets
    assert {**msgspec.structs.asdict(listed), "from_idempotent_cache": False} == msgspec.structs.asdict(changed)


async def test_one_budget_per_scope_subject_and_period_listed_in_a_stable_order(
    admin: TollboothClient, client: TollboothClient, alice: NewUser
) -> None:
    bob = await create_user("bob")
    _, conversation = await _spend(client)
    made = [
        await admin.admin.set_budget(
            SetBudgetInput(scope="user", subject_id=bob.id, period="total", limit_usd=Money(1))
        ),
        await admin.admin.set_budget(
            SetBudgetInput(scope="conversation", subject_id=conversation, period="week", limit_usd=Money(1))
        ),
        await admin.admin.set_budget(
            SetBudgetInput(scope="user", subject_id=alice.id, period="month", limit_usd=Money(2))
        ),
        await admin.admin.set_budget(
            SetBudgetInput(scope="user", subject_id=alice.id, period="day", limit_usd=Money(3))
        ),
        await admin.admin.set_budget(SetBudgetInput(scope="global", period="total", limit_usd=Money(4))),
        await admin.admin.set_budget(SetBudgetInput(scope="global", period="month", limit_usd=Money(5))),
    ]
    assert len({budget.budget_id for budget in made}) == 6
    listed = (await admin.admin.list_budgets(ListBudgetsInput())).budgets
    by_user = {alice.id: [("user", alice.id, "day"), ("user", alice.id, "month")], bob.id: [("user", bob.id, "total")]}
    assert [(b.scope, b.subject_id, b.period) for b in listed] == [
        ("global", None, "month"),
        ("global", None, "total"),
        *(key for user in sorted(by_user) for key in by_user[user]),  # by subject id, then period from day to total
        ("conversation", conversation, "week"),
    ]

    total = next(b for b in listed if b.period == "total" and b.scope == "global")
    assert (total.period_start, total.resets_at) == (datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC), None)
    month = next(b for b in listed if b.period == "month" and b.scope == "global")
    assert month.period_start == _today().replace(day=1)

    only_users = await admin.admin.list_budgets(ListBudgetsInput(scope="user"))
    assert [b.scope for b in only_users.budgets] == ["user"] * 3
    of_alice = await admin.admin.list_budgets(ListBudgetsInput(subject_id=alice.id))
    assert [(b.period, b.limit_usd) for b in of_alice.budgets] == [("day", 3), ("month", 2)]


async def test_budget_status_shows_the_caller_the_budgets_that_apply_to_them(
    admin: TollboothClient, client: TollboothClient, alice: NewUser, app_server: ServedApp
) -> None:
    bob = await create_user("bob")
    first, conversation = await _spend(client)
    async with TollboothClient(app_server.url, api_key=bob.api_key) as bob_client:
        bobs_first, bobs_conversation = await _spend(bob_client)
        await admin.admin.set_budget(SetBudgetInput(scope="global", period="month", limit_usd=Money(100)))
        await admin.admin.set_budget(
            SetBudgetInput(scope="user", subject_id=alice.id, period="day", limit_usd=Money(1))
        )
        await admin.admin.set_budget(SetBudgetInput(scope="user", subject_id=bob.id, period="day", limit_usd=Money(1)))
        await admin.admin.set_budget(
            SetBudgetInput(scope="conversation", subject_id=conversation, period="total", limit_usd=Money(1))
        )
        await admin.admin.set_budget(
            SetBudgetInput(scope="conversation", subject_id=bobs_conversation, period="total", limit_usd=Money(1))
        )
        cost, _ = await _spend(client, conversation)  # a call after the budgets were set
        mine = (await client.chat.get_budget_status()).budgets
        bobs = (await bob_client.chat.get_budget_status()).budgets
    assert [(b.scope, b.subject_id) for b in mine] == [
        ("global", None),
        ("user", alice.id),
        ("conversation", conversation),
    ]
    assert [(b.scope, b.subject_id) for b in bobs] == [
        ("global", None),
        ("user", bob.id),
        ("conversation", bobs_conversation),
    ]
    # A budget starts with what its period had already spent in its scope: the first calls count too.
    everyone = first + bobs_first + cost
    assert [b.spent_usd for b in mine] == [everyone, first + cost, first + cost]
    assert [b.spent_usd for b in bobs] == [everyone, bobs_first, bobs_first]
    assert [b.remaining_usd for b in mine] == [
        Decimal(100) - everyone,
        Decimal(1) - first - cost,
        Decimal(1) - first - cost,
    ]


async def test_delete_budget_returns_what_was_deleted_and_keeps_its_alerts(
    admin: TollboothClient, client: TollboothClient
) -> None:
    budget = await admin.admin.set_budget(
        SetBudgetInput(scope="global", period="day", limit_usd=Money("0.0000001"), hard=False, alert_thresholds=[1])
    )
    cost, _ = await _spend(client)
    deleted = await admin.admin.delete_budget(DeleteBudgetInput(budget_id=budget.budget_id))
    assert (deleted.budget_id, deleted.spent_usd, deleted.remaining_usd) == (budget.budget_id, cost, 0)
    assert (await admin.admin.list_budgets(ListBudgetsInput())).budgets == []
    assert await fetch_rows("SELECT 1 FROM budget_periods") == []
    [alert] = (await admin.admin.list_alerts(ListAlertsInput())).alerts
    assert (alert.kind, alert.budget_id, alert.threshold, alert.spent_usd) == ("threshold", budget.budget_id, 1.0, cost)

    with pytest.raises(TRPCClientError) as raised:
        await admin.admin.delete_budget(DeleteBudgetInput(budget_id=budget.budget_id))
    assert (raised.value.code, raised.value.http_status) == ("NOT_FOUND", 404)
    assert str(budget.budget_id) in raised.value.message


async def test_a_budget_on_an_unknown_user_or_conversation_is_not_found(admin: TollboothClient) -> None:
    for scope in ("user", "conversation"):
        nobody = uuid.uuid4()
        with pytest.raises(TRPCClientError) as raised:
            await admin.admin.set_budget(
                SetBudgetInput(scope=scope, subject_id=nobody, period="day", limit_usd=Money(1))  # type: ignore[arg-type]
            )
        assert (raised.value.code, raised.value.http_status) == ("NOT_FOUND", 404)
        assert f"{scope} {nobody} not found (subjectId)" in raised.value.message
    assert await fetch_rows("SELECT 1 FROM budgets") == []


async def test_alerts_are_listed_newest_first_with_their_delivery_and_paged(
    admin: TollboothClient, client: TollboothClient
) -> None:
    budget = await admin.admin.set_budget(
        SetBudgetInput(scope="global", period="day", limit_usd=Money("0.000001"), hard=False, alert_thresholds=[0.5, 1])
    )
    cost, _ = await _spend(client)
    now = datetime.datetime.now(datetime.UTC)
    spike_hour = now.replace(minute=0, second=0, microsecond=0) - datetime.timedelta(hours=1)
    await app_database().execute(
        "INSERT INTO budget_alerts (id, kind, period_start, spent_usd, baseline_usd, created_at, attempts, last_error)"
        " VALUES (gen_random_uuid(), 'spike', $1, 4, 1, now() + interval '1 second', 2, 'HTTP 500')",
        spike_hour,
    )
    first = await admin.admin.list_alerts(ListAlertsInput(limit=2))
    assert first.next_cursor is not None
    rest = await admin.admin.list_alerts(ListAlertsInput(limit=2, cursor=first.next_cursor))
    assert rest.next_cursor is None
    # Both thresholds were crossed by one call: same created_at, so their order is by id.
    spike, *thresholds = [*first.alerts, *rest.alerts]
    full = next(a for a in thresholds if a.threshold == 1)
    assert sorted(a.threshold or 0 for a in thresholds) == [0.5, 1.0]
    assert (spike.budget_id, spike.scope, spike.period, spike.limit_usd) == (None, None, None, None)
    assert (spike.spent_usd, spike.baseline_usd, spike.period_start) == (4, 1, spike_hour)
    assert (spike.attempts, spike.last_error, spike.delivered_at) == (2, "HTTP 500", None)
    assert spike.next_attempt_at is not None
    assert spike.summary.startswith("spend spike: USD 4 in the hour from ")
    assert "4.0 times the trailing average of USD 1 an hour" in spike.summary
    assert (full.budget_id, full.scope, full.period, full.limit_usd) == (
        budget.budget_id,
        "global",
        "day",
        budget.limit_usd,
    )
    assert (full.spent_usd, full.baseline_usd, full.period_start) == (cost, None, _today())
    assert full.summary == (
        f"the global daily budget of USD 0.000001: 100 % reached, USD {cost} spent since {_today():%Y-%m-%d} 00:00 UTC"
    )


async def test_lowering_a_limit_under_the_period_spend_alerts_at_once_and_once(
    admin: TollboothClient, client: TollboothClient
) -> None:
    await admin.admin.set_budget(SetBudgetInput(scope="global", period="month", limit_usd=Money(100), hard=False))
    cost, _ = await _spend(client)
    assert (await admin.admin.list_alerts(ListAlertsInput())).alerts == []
    lowered = SetBudgetInput(scope="global", period="month", limit_usd=Money(cost * Decimal("1.6")), hard=False)
    await admin.admin.set_budget(lowered)
    await admin.admin.set_budget(lowered)
    alerts = (await admin.admin.list_alerts(ListAlertsInput())).alerts
    assert sorted((a.threshold, a.spent_usd, a.limit_usd) for a in alerts) == [(0.5, cost, lowered.limit_usd)]


# --- errors -------------------------------------------------------------------------------------------------------


async def _post(http: httpx.AsyncClient, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(
        f"/{path}",
        content=json.dumps(body),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )


BAD_INPUTS = [
    ({"scope": "user", "period": "day", "limitUsd": "1"}, "subjectId"),
    ({"scope": "conversation", "period": "day", "limitUsd": "1"}, "subjectId"),
    ({"scope": "global", "subjectId": str(uuid.uuid4()), "period": "day", "limitUsd": "1"}, "subjectId"),
    ({"scope": "global", "period": "day", "limitUsd": "-1"}, "limitUsd"),
    ({"scope": "global", "period": "day", "limitUsd": "1e3"}, "limitUsd"),
    ({"scope": "global", "period": "day", "limitUsd": 5}, "limitUsd"),
    ({"scope": "global", "period": "day", "limitUsd": "0." + "0" * 18 + "1"}, "limitUsd"),
    ({"scope": "global", "period": "day", "limitUsd": "1" + "0" * 20}, "limitUsd"),
    ({"scope": "global", "period": "day", "limitUsd": "1", "alertThresholds": [0.5, 0]}, "alertThresholds"),
    ({"scope": "global", "period": "day", "limitUsd": "1", "alertThresholds": [10.01]}, "alertThresholds"),
    ({"scope": "global", "period": "day", "limitUsd": "1", "alertThresholds": [0.1] * 21}, "alertThresholds"),
    ({"scope": "global", "period": "year", "limitUsd": "1"}, "period"),
    ({"scope": "team", "period": "day", "limitUsd": "1"}, "scope"),
    ({"scope": "global", "period": "day"}, "limitUsd"),
    ({"scope": "global", "period": "day", "limitUsd": "1", "hardLimit": True}, "hardLimit"),
]


@pytest.mark.parametrize(("body", "field"), BAD_INPUTS)
async def test_an_invalid_budget_is_a_bad_request_naming_the_field(
    http: httpx.AsyncClient, root: NewUser, body: dict[str, Any], field: str
) -> None:
    response = await _post(http, root.api_key, "admin.setBudget", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["data"]["code"] == "BAD_REQUEST"
    assert field in error["message"]
    assert await fetch_rows("SELECT 1 FROM budgets") == []


async def test_invalid_list_inputs_are_bad_requests_naming_the_field(http: httpx.AsyncClient, root: NewUser) -> None:
    auth = {"authorization": f"Bearer {root.api_key}"}
    for path, input, field in [
        ("admin.listBudgets", {"scope": "global", "subjectId": str(uuid.uuid4())}, "subjectId"),
        ("admin.listBudgets", {"subjectId": "not-a-uuid"}, "subjectId"),
        ("admin.listAlerts", {"limit": 501}, "limit"),
        ("admin.listAlerts", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
    ]:
        response = await http.get(f"/{path}", params={"input": json.dumps(input)}, headers=auth)
        assert response.status_code == 400, (path, response.text)
        assert field in response.json()["error"]["message"]
    response = await _post(http, root.api_key, "admin.deleteBudget", {"budgetId": "42"})
    assert response.status_code == 400
    assert "budgetId" in response.json()["error"]["message"]


async def test_a_user_key_on_the_budget_admin_procedures_is_forbidden_even_with_a_valid_input(
    http: httpx.AsyncClient, alice: NewUser
) -> None:
    calls = [
        ("post", "admin.setBudget", {"scope": "global", "period": "day", "limitUsd": "1"}),
        ("post", "admin.deleteBudget", {"budgetId": str(uuid.uuid4())}),
        ("get", "admin.listBudgets", {}),
        ("get", "admin.listAlerts", {}),
    ]
    auth = {"authorization": f"Bearer {alice.api_key}"}
    for method, path, input in calls:
        if method == "post":
            response = await _post(http, alice.api_key, path, input)
        else:
            response = await http.get(f"/{path}", params={"input": json.dumps(input)}, headers=auth)
        assert response.status_code == 403, path
        assert response.json()["error"]["data"]["code"] == "FORBIDDEN"
    assert await fetch_rows("SELECT 1 FROM budgets") == []
    status = await http.get("/chat.getBudgetStatus", headers=auth)
    assert status.status_code == 200
    assert status.json() == {"result": {"data": {"budgets": []}}}
