"""Budgets at admission: a hard budget reserves each call's worst case before it is sent, under row locks, and the
record settles it, so concurrent calls can never take the same dollar twice (``server/budgets/admission.py``)."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from decimal import Decimal

import pytest

from schemas.budgets import SetBudgetInput
from schemas.chat import SendMessageInput
from schemas.money import Money
from server.admin import check_totals
from server.budgets.service import set_budget
from server.errors import BudgetExceededError
from server.llm.core import Attribution, LLMCore, prompt_tokens_bound
from server.llm.ledger import BUDGETED_MAX_OUTPUT_TOKENS, Claim
from server.llm.providers import ChatTurn, CompletionRequest
from server.services import Services
from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import NewUser
from tests.conftest import MakeServices, app_database, fetch_rows, until_received
from tollbooth_client import TollboothClient, TRPCClientError

# gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
MESSAGE = "How much is this? " * 20  # 360 ASCII characters: a prompt of at most 360 + framing tokens


async def _budget(
    limit_usd: str,
    *,
    scope: str = "global",
    subject_id: uuid.UUID | None = None,
    period: str = "day",
    hard: bool = True,
    thresholds: tuple[str, ...] = (),
) -> uuid.UUID:
    budget_id = uuid.uuid4()
    await app_database().execute(
        "INSERT INTO budgets (id, scope, subject_id, period, limit_usd, hard, alert_thresholds)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::numeric[])",
        budget_id,
        scope,
        subject_id,
        period,
        Decimal(limit_usd),
        hard,
        [Decimal(t) for t in thresholds],
    )
    return budget_id


async def _period(budget_id: uuid.UUID) -> dict[str, object]:
    [row] = await fetch_rows("SELECT spent_usd, reserved_usd FROM budget_periods WHERE budget_id = $1", budget_id)
    return row


def _ask(max_tokens: int | None = 100) -> SendMessageInput:
    return SendMessageInput(message=MESSAGE, model="gpt-4o-mini", max_tokens=max_tokens)


def _answer(prompt: int = 150, completion: int = 50) -> ScriptedResponse:
    return ScriptedResponse(provider="openai", usage=ScriptedUsage(prompt=prompt, completion=completion))


async def test_a_call_that_does_not_fit_is_refused_naming_the_budget_and_never_sent(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    budget_id = await _budget("0.00001")
    with pytest.raises(BudgetExceededError) as refused:
        await make_services().chat.send_message(alice.id, _ask())
    error = refused.value
    assert (error.budget_id, error.scope, error.period, error.limit_usd) == (
        budget_id,
        "global",
        "day",
        Decimal("0.00001"),
    )
    assert error.requested_usd is not None
    assert error.requested_usd > error.limit_usd
    assert "global daily budget of USD 0.00001 would be exceeded" in error.message
    assert sim.state.requests == []
    assert await fetch_rows("SELECT 1 FROM llm_call_claims") == []
    assert await fetch_rows("SELECT 1 FROM ai_usage_logs") == []
    assert await fetch_rows("SELECT 1 FROM budget_periods") == []  # the refused admission rolled back whole


async def test_an_admitted_call_reserves_its_worst_case_and_settles_its_actual_cost(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    budget_id = await _budget("1")
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=300, usage=ScriptedUsage(prompt=150, completion=50)))
    call = asyncio.create_task(make_services().chat.send_message(alice.id, _ask(max_tokens=None)))
    await until_received(sim, 1)
    during = await _period(budget_id)
    [claim] = await fetch_rows("SELECT reserved_usd, max_output_tokens FROM llm_call_claims")
    assert claim["max_output_tokens"] == BUDGETED_MAX_OUTPUT_TOKENS  # the worst case needs a bound
    body = json.loads(bytes(sim.state.requests[0].raw_body))
    assert body["max_completion_tokens"] == BUDGETED_MAX_OUTPUT_TOKENS
    assert during == {"spent_usd": 0, "reserved_usd": claim["reserved_usd"]}
    out = await call
    # 150 x 0.15 + 50 x 0.60 = 52.5 per million
    assert out.cost_usd == Decimal("0.0000525")
    assert await _period(budget_id) == {"spent_usd": Decimal("0.0000525"), "reserved_usd": 0}


async def test_an_unpriced_model_is_refused_under_a_hard_budget_never_taken_as_free(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    await _budget("100")
    with pytest.raises(BudgetExceededError, match="no known price") as refused:
        await make_services().chat.send_message(alice.id, SendMessageInput(message="hi", model="gpt-unreleased-9"))
    assert refused.value.requested_usd is None
    assert sim.state.requests == []


async def test_a_soft_budget_never_refuses_and_alerts_once_per_threshold_under_concurrency(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    # Each call costs 0.0000525: 40 of them spend 0.0021, crossing 0.5, 0.8 and 1.0 of a 0.0015 limit.
    budget_id = await _budget("0.0015", hard=False, thresholds=("0.5", "0.8", "1.0"))
    sim.state.enqueue(*[_answer() for _ in range(40)])
    services = make_services()
    await asyncio.gather(*(services.chat.send_message(alice.id, _ask()) for _ in range(40)))
    assert await _period(budget_id) == {"spent_usd": Decimal("0.0021"), "reserved_usd": 0}
    alerts = await fetch_rows("SELECT threshold, spent_usd, limit_usd FROM budget_alerts ORDER BY threshold")
    assert [row["threshold"] for row in alerts] == [Decimal("0.5"), Decimal("0.8"), Decimal("1.0")]
    for alert in alerts:
        threshold = alert["threshold"]
        assert isinstance(threshold, Decimal)
        assert alert["spent_usd"] >= threshold * Decimal("0.0015")  # type: ignore[operator]


async def test_two_hundred_concurrent_calls_never_take_more_than_the_budget(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    """The budget admits about half of them at any moment: spent + reserved never passes the limit (sampled all
    along), the refused calls never reach the provider, and the books balance afterwards."""
    calls = 200
    services = make_services()
    worst = await _worst_case(services, alice)
    limit = worst * 100
    budget_id = await _budget(str(limit))
    sim.state.enqueue(*[_answer() for _ in range(calls)])
    samples: list[Decimal] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            rows = await fetch_rows(
                "SELECT spent_usd + reserved_usd AS committed FROM budget_periods WHERE budget_id = $1", budget_id
            )
            samples.extend(row["committed"] for row in rows)  # type: ignore[misc]
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    outcomes = await asyncio.gather(
        *(services.chat.send_message(alice.id, _ask()) for _ in range(calls)), return_exceptions=True
    )
    done.set()
    await sampler
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(admitted) + len(refused) == calls
    assert len(admitted) >= 100
    assert refused, "the budget should have refused some of them"
    assert len(sim.state.requests) == len(admitted)
    assert samples
    assert max(samples) <= limit
    period = await _period(budget_id)
    assert period["reserved_usd"] == 0
    [spent] = await fetch_rows("SELECT sum(estimated_cost_usd) AS total FROM ai_usage_logs")
    assert period["spent_usd"] == spent["total"] == Decimal("0.0000525") * len(admitted)
    assert period["spent_usd"] <= limit  # type: ignore[operator]
    assert (await check_totals(app_database())).consistent


async def _worst_case(services: Services, alice: NewUser) -> Decimal:
    """What one ``_ask()`` reserves: measured by claiming one under a roomy budget, then removing both."""
    budget_id = await _budget("1000")
    request = CompletionRequest(model="gpt-4o-mini", messages=(ChatTurn(role="user", content=MESSAGE),), max_tokens=100)
    now = datetime.datetime.now(datetime.UTC)
    claim = Claim(
        call_id=uuid.uuid4(),
        user_id=alice.id,
        conversation_id=None,
        procedure="test.measure",
        provider="openai",
        requested_model="gpt-4o-mini",
        prompt_tokens_estimate=1,
        max_output_tokens=100,
        created_at=now,
        lease_expires_at=now,
    )
    await services.llm.ledger.claim(claim, prompt_tokens_bound=lambda: prompt_tokens_bound(request))
    [row] = await fetch_rows("SELECT reserved_usd FROM llm_call_claims")
    await app_database().execute("DELETE FROM llm_call_claims")
    await app_database().execute("DELETE FROM budgets WHERE id = $1", budget_id)
    reserved = row["reserved_usd"]
    assert isinstance(reserved, Decimal)
    return reserved


async def test_a_new_period_starts_with_the_whole_budget(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    """A call at 23:59:59 UTC counts in its own day; the next second's call is admitted against a fresh day."""
    base = make_services().llm
    now = [datetime.datetime(2026, 11, 28, 23, 59, 59, tzinfo=datetime.UTC)]
    llm = LLMCore(base.providers, base.catalogue, base.recorder, base.spool, base.ledger, clock=lambda: now[0])
    request = CompletionRequest(model="gpt-4o-mini", messages=(ChatTurn(role="user", content=MESSAGE),), max_tokens=100)
    attribution = Attribution(user_id=alice.id, procedure="test.budget")
    # Room for one call's worst case (384 prompt and 100 output tokens: 0.0001176) but not for a second one after
    # the first has spent its actual 0.0000525.
    budget_id = await _budget("0.00015")
    sim.state.enqueue(*[_answer() for _ in range(3)])
    await llm.invoke(request, attribution)
    with pytest.raises(BudgetExceededError) as refused:
        await llm.invoke(request, attribution)
    assert refused.value.resets_at == datetime.datetime(2026, 11, 29, tzinfo=datetime.UTC)
    now[0] = datetime.datetime(2026, 11, 29, 0, 0, 0, tzinfo=datetime.UTC)
    await llm.invoke(request, attribution)
    periods = await fetch_rows(
        "SELECT period_start, spent_usd, reserved_usd FROM budget_periods WHERE budget_id = $1 ORDER BY period_start",
        budget_id,
    )
    assert periods == [
        {
            "period_start": datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC),
            "spent_usd": Decimal("0.0000525"),
            "reserved_usd": 0,
        },
        {
            "period_start": datetime.datetime(2026, 11, 29, tzinfo=datetime.UTC),
            "spent_usd": Decimal("0.0000525"),
            "reserved_usd": 0,
        },
    ]


async def test_a_user_budget_binds_only_that_user(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    from server.users import create_user

    bob = await create_user("bob")
    await _budget("0.00001", scope="user", subject_id=bob.id)
    sim.state.enqueue(_answer())
    services = make_services()
    await services.chat.send_message(alice.id, _ask())
    with pytest.raises(BudgetExceededError) as refused:
        await services.chat.send_message(bob.id, _ask())
    assert (refused.value.scope, refused.value.subject_id) == ("user", bob.id)


async def test_a_refusal_reaches_the_client_as_payment_required_naming_the_budget(
    client: TollboothClient, sim: RunningSimulator
) -> None:
    budget_id = await _budget("0.00001", period="month")
    with pytest.raises(TRPCClientError) as refused:
        await client.chat.send_message(_ask())
    error = refused.value
    assert (error.code, error.http_status) == ("PAYMENT_REQUIRED", 402)
    assert "global monthly budget of USD 0.00001 would be exceeded" in error.message
    assert error.budget is not None
    assert (error.budget.budget_id, error.budget.scope, error.budget.period) == (budget_id, "global", "month")
    assert (error.budget.limit_usd, error.budget.spent_usd, error.budget.reserved_usd) == (Decimal("0.00001"), 0, 0)
    assert error.budget.requested_usd is not None
    assert error.budget.resets_at is not None
    assert error.budget.resets_at.day == 1
    assert sim.state.requests == []


async def test_a_budget_created_mid_period_starts_with_what_the_period_has_spent(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(_answer(), _answer())
    services = make_services()
    await services.chat.send_message(alice.id, _ask())
    await services.chat.send_message(alice.id, _ask())
    budget = await set_budget(
        app_database(),
        SetBudgetInput(scope="user", subject_id=alice.id, period="day", limit_usd=Money("1")),
    )
    assert budget.spent_usd == Decimal("0.000105")  # both calls of today, 0.0000525 each
    sim.state.enqueue(_answer())
    await services.chat.send_message(alice.id, _ask())
    assert await _period(budget.budget_id) == {"spent_usd": Decimal("0.0001575"), "reserved_usd": 0}
    assert (await check_totals(app_database())).consistent
