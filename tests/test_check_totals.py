"""check-totals: every conversation's stored totals, and the usage rollup, equal the sums over the usage rows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.admin import UsageByModelInput
from server.admin.consistency import check_totals
from server.admin.queries import get_usage_by_model
from tests.conftest import app_database
from tests.usage_records import UNPRICED_MODEL, new_user, record_call, tokens

pytestmark = pytest.mark.usefixtures("db")

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


async def _conversation_with_several_models() -> uuid.UUID:
    user, conversation = await new_user(), uuid.uuid4()
    await record_call(at=T0, user_id=user, conversation_id=conversation)
    await record_call(
        at=T0 + timedelta(minutes=1),
        user_id=user,
        conversation_id=conversation,
        model="claude-sonnet-4-5",
        usage=tokens(100, cache_read=900, cache_write_1h=50, output=40),
    )
    await record_call(at=T0 + timedelta(minutes=2), user_id=user, conversation_id=conversation, model=UNPRICED_MODEL)
    await record_call(
        at=T0 + timedelta(minutes=3),
        user_id=user,
        conversation_id=conversation,
        status="error",
        usage=tokens(0, output=0),
        reply=None,
    )
    await record_call(at=T0 + timedelta(minutes=4), user_id=user, conversation_id=None)
    return conversation


def _check_totals_cli() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "check-totals"],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_totals_written_by_the_recorder_are_consistent() -> None:
    await _conversation_with_several_models()
    await _conversation_with_several_models()

    report = await check_totals(app_database())

    assert report.consistent
    assert report.conversations == 2
    assert report.differences == []
    assert report.rollup_differences == []


async def test_concurrent_calls_of_one_model_keep_totals_and_rollup_exact() -> None:
    """Concurrent writers of one rollup key (distinct conversations, so they do not queue on a conversation row)
    spread over stripes instead of waiting for each other; nothing may be lost."""
    user = await new_user()
    conversations = [uuid.uuid4() for _ in range(10)]
    await asyncio.gather(
        *(
            record_call(at=T0 + timedelta(seconds=i % 60), user_id=user, conversation_id=conversations[i % 10])
            for i in range(60)
        )
    )

    report = await check_totals(app_database())
    usage = await get_usage_by_model(app_database(), UsageByModelInput())

    assert report.consistent, (report.differences, report.rollup_differences)
    assert report.conversations == 10
    assert [(m.model, m.llm_calls, m.cost_usd) for m in usage.models] == [("gpt-4o", 60, Decimal("0.0045") * 60)]


async def test_a_tampered_total_is_reported_with_both_values() -> None:
    conversation = await _conversation_with_several_models()
    await app_database().execute(
        "UPDATE conversations SET total_cost_usd = total_cost_usd + 0.000001, llm_calls = llm_calls - 1 WHERE id = $1",
        conversation,
    )

    report = await check_totals(app_database())

    assert not report.consistent
    differences = {d.field: d for d in report.differences}
    assert set(differences) == {"total_cost_usd", "llm_calls"}
    assert differences["llm_calls"].stored == "3"
    assert differences["llm_calls"].actual == "4"
    cost = differences["total_cost_usd"]
    assert cost.conversation_id == conversation
    assert Decimal(cost.stored) - Decimal(cost.actual) == Decimal("0.000001")
    assert str(cost).startswith(f"conversation {conversation}: total_cost_usd is ")


async def test_a_tampered_model_distribution_is_reported_per_model() -> None:
    conversation = await _conversation_with_several_models()
    await app_database().execute(
        "UPDATE conversations SET model_distribution = model_distribution - 'claude-sonnet-4-5' "
        "|| jsonb_build_object('gpt-4o', jsonb_build_object('calls', 2, 'tokens', 1200, 'cost_usd', '0.0045'))"
        " WHERE id = $1",
        conversation,
    )

    report = await check_totals(app_database())

    # gpt-4o was rewritten to what it already was; claude-sonnet-4-5 (100 x $3 + 900 x $0.30 + 50 x $6 + 40 x $15
    # per 1M) went missing.
    differences = {d.field: d for d in report.differences}
    assert set(differences) == {
        "model_distribution.claude-sonnet-4-5.calls",
        "model_distribution.claude-sonnet-4-5.tokens",
        "model_distribution.claude-sonnet-4-5.cost_usd",
    }
    assert all(d.stored == "absent" for d in differences.values())
    assert differences["model_distribution.claude-sonnet-4-5.tokens"].actual == "1090"
    assert Decimal(differences["model_distribution.claude-sonnet-4-5.cost_usd"].actual) == Decimal("0.00147")


async def test_usage_rows_of_a_missing_conversation_are_reported() -> None:
    conversation = await _conversation_with_several_models()
    await app_database().execute("DELETE FROM conversations WHERE id = $1", conversation)

    report = await check_totals(app_database())

    assert [(d.conversation_id, d.field, d.stored) for d in report.differences] == [
        (conversation, "conversation", "absent")
    ]


async def test_the_rollup_follows_reprices_and_deletions_and_a_tampered_rollup_is_reported() -> None:
    await _conversation_with_several_models()
    database = app_database()

    await database.execute(
        "UPDATE ai_usage_logs SET pricing_status = 'priced', estimated_cost_usd = 0.5 WHERE model = $1", UNPRICED_MODEL
    )
    await database.execute("DELETE FROM ai_usage_logs WHERE status = 'error'")
    report = await check_totals(database)
    repriced = {m.model: m for m in (await get_usage_by_model(database, UsageByModelInput())).models}

    assert report.rollup_differences == []
    assert repriced[UNPRICED_MODEL].cost_usd == Decimal("0.5")
    assert repriced[UNPRICED_MODEL].unpriced_calls == 0
    assert repriced["gpt-4o"].llm_calls == 2
    # The conversation's totals were not repriced with its rows: that is exactly what check-totals is for.
    assert {d.field for d in report.differences} >= {"total_cost_usd", "llm_calls"}

    await database.execute("UPDATE ai_usage_rollup SET calls = calls + 1 WHERE model = 'gpt-4o'")
    tampered = await check_totals(database)
    assert [(d.model, d.field) for d in tampered.rollup_differences] == [("gpt-4o", "calls")]


async def test_the_cli_says_all_conversations_are_consistent() -> None:
    await _conversation_with_several_models()

    result = _check_totals_cli()

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "all 1 conversations consistent"


async def test_the_cli_lists_differences_and_exits_1() -> None:
    conversation = await _conversation_with_several_models()
    await app_database().execute(
        "UPDATE conversations SET total_tokens_used = total_tokens_used + 7 WHERE id = $1", conversation
    )

    result = _check_totals_cli()

    assert result.returncode == 1
    assert f"conversation {conversation}: total_tokens_used is " in result.stdout
    assert "differences: 1 in 1 of 1 conversations, 0 in the usage rollup" in result.stderr
