"""Repricing (``python -m server reprice``, ``server/admin/reprice.py``, ``admin.repriceRuns``): a price file lowers
gpt-4o-mini's rates from a date and gives a model without a price one; history follows, with an adjustment per row,
and ``check-totals`` still finds nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.admin import UnpricedCallsInput
from schemas.budgets import SetBudgetInput
from server.admin.consistency import check_totals
from server.admin.queries import get_unpriced_calls
from server.admin.reprice import RepriceError, RepriceFilters, RepriceRun, priced_at_service_tier, reprice, resume
from server.cli import main
from server.llm.pricing import PriceCatalogue
from server.users import NewUser, create_user
from tests.conftest import ServedApp, app_database, fetch_rows
from tests.usage_records import UNPRICED_MODEL, new_user, record_call

pytestmark = pytest.mark.usefixtures("db")

ROOT = Path(__file__).resolve().parent.parent

CUT = datetime(2026, 3, 15, tzinfo=UTC)
BEFORE = CUT - timedelta(days=3)
AFTER = CUT + timedelta(days=1)
PRICES = f"""
[[models]]
provider = "openai"
model = "gpt-4o-mini"
effective_from = 2026-03-15
input = 0.10
cache_read = 0.05
output = 0.40

[[models]]
provider = "openai"
model = "{UNPRICED_MODEL}"
effective_from = 2020-01-01
input = 1
output = 2
"""
# tokens(): 1,000 input and 200 output tokens.
OLD_MINI = Decimal("0.00027")  # 1000 x 0.15 + 200 x 0.60, per million
NEW_MINI = Decimal("0.00018")  # 1000 x 0.10 + 200 x 0.40
NEW_UNPRICED = Decimal("0.0014")  # 1000 x 1 + 200 x 2
MINI_AFTER_CUT = 5
UNPRICED_CALLS = 2
DELTA = MINI_AFTER_CUT * (NEW_MINI - OLD_MINI) + UNPRICED_CALLS * NEW_UNPRICED


@pytest.fixture
def price_path(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES, encoding="utf-8")
    return path


@pytest.fixture
def catalogue(price_path: Path) -> PriceCatalogue:
    return PriceCatalogue.load(price_path)


class History:
    def __init__(self, user: uuid.UUID, first: uuid.UUID, second: uuid.UUID) -> None:
        self.user, self.first, self.second = user, first, second


async def _history() -> History:
    """gpt-4o-mini before and after the cut (one call outside any conversation), gpt-4o after it (a price the file
    does not touch), and two calls of a model without a price; a global and a user budget over all time."""
    user, first, second = await new_user(), uuid.uuid4(), uuid.uuid4()
    for minute in range(3):
        await record_call(
            at=BEFORE + timedelta(minutes=minute), user_id=user, conversation_id=first, model="gpt-4o-mini"
        )
    for minute in range(MINI_AFTER_CUT - 1):
        conversation = first if minute % 2 else second
        await record_call(
            at=AFTER + timedelta(minutes=minute), user_id=user, conversation_id=conversation, model="gpt-4o-mini"
        )
    await record_call(at=AFTER + timedelta(hours=1), user_id=user, conversation_id=None, model="gpt-4o-mini")
    await record_call(at=AFTER + timedelta(hours=2), user_id=user, conversation_id=first, model="gpt-4o")
    await record_call(at=BEFORE, user_id=user, conversation_id=first, model=UNPRICED_MODEL)
    await record_call(at=AFTER, user_id=user, conversation_id=second, model=UNPRICED_MODEL)
    from server.budgets.service import set_budget

    db = app_database()
    await set_budget(db, SetBudgetInput(scope="global", period="total", limit_usd=Decimal(1), hard=False))
    await set_budget(db, SetBudgetInput(scope="user", subject_id=user, period="total", limit_usd=Decimal(1), hard=True))
    # A monthly budget created now counts nothing from March: a reprice of March leaves it alone.
    await set_budget(db, SetBudgetInput(scope="global", period="month", limit_usd=Decimal(1), hard=False))
    return History(user, first, second)


async def _state() -> dict[str, Any]:
    """Everything a reprice may change."""
    return {
        "usage": await fetch_rows(
            "SELECT id, estimated_cost_usd, pricing_status, price_source, rate_input, cost_output FROM ai_usage_logs "
            "ORDER BY id"
        ),
        "conversations": await fetch_rows(
            "SELECT id, total_cost_usd, unpriced_calls, model_distribution FROM conversations ORDER BY id"
        ),
        "rollup": await fetch_rows(
            "SELECT model, sum(cost_usd) AS cost, sum(unpriced_calls) AS unpriced FROM ai_usage_rollup GROUP BY 1 "
            "ORDER BY 1"
        ),
        "budgets": await fetch_rows("SELECT budget_id, period_start, spent_usd FROM budget_periods ORDER BY 1, 2"),
        "adjustments": await fetch_rows("SELECT count(*) AS n FROM usage_cost_adjustments"),
    }


async def _cli(*argv: str, price_file: Path) -> tuple[int, str, str]:
    """``python -m server ARGV`` with the price file, as an operator runs it. A process of its own: ``main`` migrates
    through Piccolo's engine, whose pool this test process already runs in its own event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        *argv,
        cwd=ROOT,
        env={**os.environ, "PRICE_FILE": str(price_file)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _spent(scope: str, period: str) -> Decimal:
    rows = await fetch_rows(
        "SELECT p.spent_usd FROM budget_periods p JOIN budgets b ON b.id = p.budget_id "
        "WHERE b.scope = $1 AND b.period = $2",
        scope,
        period,
    )
    return sum((row["spent_usd"] for row in rows), Decimal(0))


def test_reprice_requires_dry_run_or_apply_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["reprice"])
    assert exit.value.code == 2
    assert "--dry-run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reprice", "--help"])
    help = " ".join(capsys.readouterr().out.split())
    assert "--dry-run" in help
    assert "--apply" in help
    assert "one of the two is required" in help


async def test_dry_run_reports_the_rows_and_the_exact_delta_and_changes_nothing(
    price_path: Path,
) -> None:
    await _history()
    before = await _state()

    code, out, _ = await _cli("reprice", "--dry-run", "--json", price_file=price_path)

    assert code == 0
    figures = json.loads(out)
    assert figures["dryRun"] is True
    assert figures["matchedCalls"] == figures["scannedCalls"] == 11
    assert figures["changedCalls"] == MINI_AFTER_CUT + UNPRICED_CALLS
    assert figures["newlyPricedCalls"] == UNPRICED_CALLS
    assert Decimal(figures["deltaUsd"]) == DELTA
    assert figures["models"]["gpt-4o-mini"] == {
        "scannedCalls": 8,
        "changedCalls": MINI_AFTER_CUT,
        "newlyPricedCalls": 0,
        "skippedCalls": 0,
        "deltaUsd": str(MINI_AFTER_CUT * (NEW_MINI - OLD_MINI)),
    }
    assert figures["models"]["gpt-4o"]["changedCalls"] == 0
    assert await _state() == before

    code, out, _ = await _cli("reprice", "--dry-run", price_file=price_path)
    assert code == 0
    assert "7 would change (2 newly priced" in out
    assert f"total delta USD {DELTA}" in out
    assert any(line.split()[:3] == ["gpt-4o-mini", "8", "5"] for line in out.splitlines())


async def test_apply_changes_exactly_the_rows_after_the_date_and_every_total_follows(
    price_path: Path,
) -> None:
    history = await _history()
    global_before, user_before = await _spent("global", "total"), await _spent("user", "total")
    month_before = await _spent("global", "month")

    code, out, err = await _cli(
        "reprice",
        "--apply",
        "--reason",
        "negotiated rate",
        "--json",
        "--batch-size",
        "4",
        "--progress-every",
        "1",
        price_file=price_path,
    )

    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("reprice ")]
    assert [line.split(": ")[1].split(" rows")[0] for line in progress] == ["4 / 11", "8 / 11", "11 / 11"]
    assert all(line.endswith(" rows/s") for line in progress)
    assert json.loads(out)["changedCalls"] == MINI_AFTER_CUT + UNPRICED_CALLS
    mini = await fetch_rows(
        "SELECT created_at, estimated_cost_usd, price_source, rate_input FROM ai_usage_logs WHERE model = 'gpt-4o-mini'"
    )
    for row in mini:
        if row["created_at"] < CUT:
            assert (row["estimated_cost_usd"], row["rate_input"]) == (OLD_MINI, Decimal("0.15"))
            assert row["price_source"].startswith("genai-prices")
        else:
            assert (row["estimated_cost_usd"], row["rate_input"]) == (NEW_MINI, Decimal("0.10"))
            assert row["price_source"] == "prices.toml:gpt-4o-mini from 2026-03-15"
    adjustments = await fetch_rows("SELECT * FROM usage_cost_adjustments ORDER BY call_created_at")
    assert len(adjustments) == MINI_AFTER_CUT + UNPRICED_CALLS
    assert {a["reason"] for a in adjustments} == {"negotiated rate"}
    assert sum(a["delta_usd"] for a in adjustments) == DELTA
    unpriced = [a for a in adjustments if a["model"] == UNPRICED_MODEL]
    assert [
        (a["old_cost_usd"], a["new_cost_usd"], a["old_pricing_status"], a["new_pricing_status"]) for a in unpriced
    ] == [(None, NEW_UNPRICED, "unpriced", "priced")] * 2
    assert json.loads(unpriced[0]["new_buckets"])["output"] == {"rate": "2", "cost": "0.0004"}

    conversations = {row["id"]: row for row in await fetch_rows("SELECT * FROM conversations")}
    first = conversations[history.first]
    assert first["unpriced_calls"] == 0
    assert (
        first["total_cost_usd"]
        == 3 * OLD_MINI
        + 2 * NEW_MINI
        + NEW_UNPRICED
        + (await fetch_rows("SELECT estimated_cost_usd FROM ai_usage_logs WHERE model = 'gpt-4o'"))[0][
            "estimated_cost_usd"
        ]
    )
    assert Decimal(json.loads(first["model_distribution"])[UNPRICED_MODEL]["cost_usd"]) == NEW_UNPRICED
    rollup = {row["model"]: row for row in await fetch_rows("SELECT * FROM usage_by_model")}
    assert rollup[UNPRICED_MODEL]["cost_usd"] == 2 * NEW_UNPRICED
    assert rollup[UNPRICED_MODEL]["unpriced_calls"] == 0
    assert rollup["gpt-4o-mini"]["cost_usd"] == 3 * OLD_MINI + MINI_AFTER_CUT * NEW_MINI
    assert await _spent("global", "total") == global_before + DELTA
    assert await _spent("user", "total") == user_before + DELTA
    assert await _spent("global", "month") == month_before
    assert (await check_totals(app_database())).consistent

    code, out, _ = await _cli("reprice", "--apply", "--json", price_file=price_path)
    assert code == 0
    again = json.loads(out)
    assert (again["changedCalls"], again["deltaUsd"]) == (0, "0")
    assert len(await fetch_rows("SELECT id FROM usage_cost_adjustments")) == MINI_AFTER_CUT + UNPRICED_CALLS

    code, out, _ = await _cli("check-totals", price_file=price_path)
    assert code == 0, out

    code, _, err = await _cli("reprice", "--resume", str(uuid.uuid4()), price_file=price_path)
    assert code == 2
    assert "unknown" in err


async def test_previously_unpriced_rows_become_priced_and_leave_unpriced_calls(catalogue: PriceCatalogue) -> None:
    await _history()
    db = app_database()
    assert (await get_unpriced_calls(db, UnpricedCallsInput())).unpriced_calls == UNPRICED_CALLS

    run = await reprice(db, catalogue, RepriceFilters(models=(UNPRICED_MODEL,)), dry_run=False, reason="price added")

    assert (run.totals.changed, run.totals.newly_priced, run.totals.delta_usd) == (2, 2, 2 * NEW_UNPRICED)
    unpriced = await get_unpriced_calls(db, UnpricedCallsInput())
    assert unpriced.unpriced_calls == 0
    assert unpriced.models == []
    assert unpriced.rows == []
    rows = await fetch_rows(
        "SELECT pricing_status, estimated_cost_usd FROM ai_usage_logs WHERE model = $1", UNPRICED_MODEL
    )
    assert rows == [{"pricing_status": "priced", "estimated_cost_usd": NEW_UNPRICED}] * 2
    assert (await check_totals(db)).consistent


async def test_window_and_model_filters_bound_the_rows(catalogue: PriceCatalogue) -> None:
    await _history()
    db = app_database()
    window = RepriceFilters(since=CUT, until=AFTER + timedelta(minutes=2), models=("gpt-4o-mini",))

    run = await reprice(db, catalogue, window, dry_run=False)

    assert (run.matched, run.totals.changed) == (2, 2)
    assert (await check_totals(db)).consistent
    everything = await reprice(db, catalogue, RepriceFilters(), dry_run=True)
    assert everything.totals.changed == MINI_AFTER_CUT - 2 + UNPRICED_CALLS


async def test_admin_reprice_runs_lists_the_runs_newest_first_with_their_figures(
    catalogue: PriceCatalogue, app_server: ServedApp
) -> None:
    await _history()
    db = app_database()
    dry = await reprice(db, catalogue, RepriceFilters(), dry_run=True, reason="preview")
    applied = await reprice(db, catalogue, RepriceFilters(), dry_run=False, reason="negotiated rate")
    again = await reprice(db, catalogue, RepriceFilters(), dry_run=False, reason="negotiated rate")
    root: NewUser = await create_user("root", is_admin=True)
    headers = {"authorization": f"Bearer {root.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers, timeout=60) as http:
        response = await http.get("/admin.repriceRuns", params={"input": json.dumps({"limit": 2})})
        assert response.status_code == 200, response.text
        page = response.json()["result"]["data"]
        response = await http.get(
            "/admin.repriceRuns", params={"input": json.dumps({"limit": 2, "cursor": page["nextCursor"]})}
        )
        rest = response.json()["result"]["data"]
        alice = await create_user("alice")
        response = await http.get("/admin.repriceRuns", headers={"authorization": f"Bearer {alice.api_key}"})
        assert response.status_code == 403

    runs = page["runs"] + rest["runs"]
    assert [run["runId"] for run in runs] == [str(again.run_id), str(applied.run_id), str(dry.run_id)]
    assert rest["nextCursor"] is None
    latest, first_apply, preview = runs
    assert (latest["changedCalls"], latest["deltaUsd"], latest["status"]) == (0, "0", "completed")
    assert first_apply["changedCalls"] == 7
    assert Decimal(first_apply["deltaUsd"]) == DELTA
    assert first_apply["newlyPricedCalls"] == 2
    assert first_apply["reason"] == "negotiated rate"
    assert first_apply["dryRun"] is False
    assert preview["dryRun"] is True
    assert preview["changedCalls"] == 7
    assert first_apply["models"][0]["model"] == "gpt-4o-mini"
    assert first_apply["models"][0]["changedCalls"] == 5
    assert first_apply["matchedCalls"] == first_apply["scannedCalls"] == 11
    assert first_apply["finishedAt"] is not None
    assert first_apply["modelFilter"] == []


async def test_a_failed_run_is_resumed_from_its_cursor(catalogue: PriceCatalogue) -> None:
    await _history()
    db = app_database()

    def crash(*_: object) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        await reprice(db, catalogue, RepriceFilters(), dry_run=False, batch_size=3, progress=crash, progress_every=1)
    [failed] = await fetch_rows("SELECT id, status, scanned_calls, error FROM reprice_runs")
    assert (failed["status"], failed["scanned_calls"], failed["error"]) == ("failed", 3, "RuntimeError: killed")
    assert (await check_totals(db)).consistent  # whole batches only

    run = await resume(db, catalogue, failed["id"], batch_size=4)

    assert (run.status, run.totals.scanned, run.totals.changed, run.totals.delta_usd) == ("completed", 11, 7, DELTA)
    assert len(await fetch_rows("SELECT id FROM usage_cost_adjustments")) == 7
    assert (await check_totals(db)).consistent
    with pytest.raises(RepriceError, match="already completed"):
        await resume(db, catalogue, failed["id"])


async def test_calls_recorded_during_a_reprice_are_neither_lost_nor_counted_twice(catalogue: PriceCatalogue) -> None:
    """Recording transactions on the same conversations and budgets run while batches of 7 rows are repriced; at
    the end every call is counted once, every total is the sum of its rows, and a second run reprices exactly the
    rows recorded at the old price behind the first run's cursor."""
    db = app_database()
    user = await new_user()
    conversations = [uuid.uuid4() for _ in range(4)]
    from server.budgets.service import set_budget

    await set_budget(db, SetBudgetInput(scope="global", period="total", limit_usd=Decimal(100), hard=False))
    await set_budget(
        db, SetBudgetInput(scope="user", subject_id=user, period="total", limit_usd=Decimal(100), hard=False)
    )
    for i in range(120):
        await record_call(
            at=AFTER + timedelta(seconds=i), user_id=user, conversation_id=conversations[i % 4], model="gpt-4o-mini"
        )

    repricing = asyncio.Event()
    recorded_while_repricing = 0

    async def record_meanwhile() -> None:
        nonlocal recorded_while_repricing
        for i in range(60):
            await record_call(
                at=AFTER + timedelta(seconds=i, milliseconds=500),
                user_id=user,
                conversation_id=conversations[i % 4],
                model="gpt-4o-mini",
            )
            recorded_while_repricing += repricing.is_set()

    async def first_run() -> RepriceRun:
        repricing.set()
        try:
            return await reprice(db, catalogue, RepriceFilters(), dry_run=False, batch_size=7)
        finally:
            repricing.clear()

    first, _, _ = await asyncio.gather(first_run(), record_meanwhile(), record_meanwhile())

    assert recorded_while_repricing > 0
    assert first.totals.changed >= 120
    [counts] = await fetch_rows(
        "SELECT count(*) AS calls, (SELECT sum(llm_calls) FROM conversations) AS counted FROM ai_usage_logs"
    )
    assert counts == {"calls": 240, "counted": 240}
    assert (await check_totals(db)).consistent
    second = await reprice(db, catalogue, RepriceFilters(), dry_run=False)
    assert first.totals.changed + second.totals.changed == 240
    costs = await fetch_rows("SELECT DISTINCT estimated_cost_usd FROM ai_usage_logs")
    assert costs == [{"estimated_cost_usd": NEW_MINI}]
    assert await _spent("global", "total") == 240 * NEW_MINI
    assert (await check_totals(db)).consistent


async def test_check_totals_finds_budget_spend_that_is_not_the_sum_of_its_calls() -> None:
    await _history()
    db = app_database()
    assert (await check_totals(db)).consistent
    await db.execute(
        "UPDATE budget_periods SET spent_usd = spent_usd + 1 "
        "WHERE budget_id = (SELECT id FROM budgets WHERE scope = 'user')"
    )

    report = await check_totals(db)

    [difference] = report.budget_differences
    assert Decimal(difference.stored) - Decimal(difference.actual) == 1
    assert "spent_usd is" in str(difference)


def test_rows_priced_at_a_service_tier_are_recognised_by_their_source() -> None:
    assert not priced_at_service_tier("genai-prices 0.0.40 openai/gpt-4o")
    assert not priced_at_service_tier("prices.toml:gpt-4o from 2026-01-01")
    assert not priced_at_service_tier(None)
    assert priced_at_service_tier("genai-prices 0.0.40 openai/gpt-4o batch")
    assert priced_at_service_tier("prices.toml:gpt-4o from 2026-01-01 batch x0.5")
    assert priced_at_service_tier("genai-prices 0.0.40 openai/gpt-4o (flex: no rates, standard applied)")


async def test_service_tier_rows_are_skipped_not_priced_at_the_wrong_tier(catalogue: PriceCatalogue) -> None:
    user = await new_user()
    await record_call(at=AFTER, user_id=user, conversation_id=uuid.uuid4(), model="gpt-4o-mini")
    await app_database().execute(
        "UPDATE ai_usage_logs SET price_source = price_source || ' batch', estimated_cost_usd = estimated_cost_usd / 2"
    )
    await app_database().execute(
        "UPDATE conversations SET total_cost_usd = total_cost_usd / 2, "
        "model_distribution = jsonb_set(model_distribution, '{gpt-4o-mini,cost_usd}', "
        "to_jsonb(((model_distribution -> 'gpt-4o-mini' ->> 'cost_usd')::numeric / 2)::text))"
    )

    run = await reprice(app_database(), catalogue, RepriceFilters(), dry_run=False)

    assert (run.totals.scanned, run.totals.skipped, run.totals.changed) == (1, 1, 0)
