"""The admin reads against known data written through the real recorder: totals, buckets, edges and inputs."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from schemas import codec
from schemas.admin import (
    ConversationCostInput,
    TopConversationsInput,
    UnpricedCallsInput,
    UsageByDateRangeInput,
    UsageByModelInput,
    UsageByProcedureInput,
    UsageFigures,
)
from schemas.validation import InvalidInput, Position, decode_cursor, encode_cursor
from server.admin.queries import (
    get_top_conversations_by_cost,
    get_unpriced_calls,
    get_usage_by_conversation,
    get_usage_by_date_range,
    get_usage_by_date_range_and_group,
    get_usage_by_model,
    get_usage_by_procedure,
)
from server.errors import ConversationNotFoundError
from server.llm.recorder import UsageRecord
from tests.conftest import app_database
from tests.usage_records import UNPRICED_MODEL, new_user, record_call, tokens

pytestmark = pytest.mark.usefixtures("db")

BERLIN = ZoneInfo("Europe/Berlin")
_DATE_RANGE = codec.decoder(UsageByDateRangeInput)
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def _cost(records: Sequence[UsageRecord]) -> Decimal:
    return sum((r.priced.total_cost for r in records if r.priced.total_cost is not None), Decimal(0))


def _group_cost(records: Sequence[UsageRecord]) -> Decimal | None:
    """What a report shows as the cost of ``records``: null when there are some and all are unpriced."""
    if records and all(r.priced.status == "unpriced" for r in records):
        return None
    return _cost(records)


def _assert_figures(figures: UsageFigures, records: Sequence[UsageRecord]) -> None:
    """``figures`` are exactly what ``records`` add up to, bucket by bucket."""
    assert figures.llm_calls == len(records)
    assert figures.error_calls == sum(r.status == "error" for r in records)
    assert figures.cancelled_calls == sum(r.status == "cancelled" for r in records)
    assert figures.unpriced_calls == sum(r.priced.status == "unpriced" for r in records)
    assert figures.tokens.input == sum(r.usage.input for r in records)
    assert figures.tokens.cache_read == sum(r.usage.cache_read for r in records)
    assert figures.tokens.cache_write_5m == sum(r.usage.cache_write_5m for r in records)
    assert figures.tokens.cache_write_1h == sum(r.usage.cache_write_1h for r in records)
    assert figures.tokens.output == sum(r.usage.output for r in records)
    assert figures.tokens.prompt == sum(r.usage.prompt_total for r in records)
    assert figures.tokens.total == sum(r.usage.prompt_total + r.usage.output for r in records)
    assert figures.cost_usd == _group_cost(records)


# --- admin.getConversationCost ------------------------------------------------------------------------------------


async def test_conversation_cost_explains_its_totals_by_model_and_procedure() -> None:
    user, conversation = await new_user(), uuid.uuid4()
    records = [
        await record_call(at=T0, user_id=user, conversation_id=conversation, usage=tokens(1_000, output=200)),
        await record_call(
            at=T0 + timedelta(minutes=1),
            user_id=user,
            conversation_id=conversation,
            model="claude-sonnet-4-5",
            procedure="chat.executeAction",
            usage=tokens(500, cache_read=2_000, cache_write_5m=1_000, cache_write_1h=100, output=300),
        ),
        await record_call(
            at=T0 + timedelta(minutes=2), user_id=user, conversation_id=conversation, model=UNPRICED_MODEL
        ),
        await record_call(
            at=T0 + timedelta(minutes=3),
            user_id=user,
            conversation_id=conversation,
            status="error",
            usage=tokens(0, output=0),
            reply=None,
        ),
    ]

    cost = await get_usage_by_conversation(app_database(), ConversationCostInput(conversation_id=conversation))

    assert cost.owner_id == user
    assert cost.last_activity_at == T0 + timedelta(minutes=3)
    assert cost.totals.llm_calls == 4
    assert cost.totals.unpriced_calls == 1
    # gpt-4o: 1000 x $2.50 + 200 x $10 per 1M; claude-sonnet-4-5: 500 x $3 + 2000 x $0.30 + 1000 x $3.75
    # + 100 x $6 + 300 x $15 per 1M; the unpriced call adds nothing; the error call had no tokens.
    assert cost.totals.total_cost_usd == _cost(records) == Decimal("0.0045") + Decimal("0.01095")
    assert cost.totals.total_prompt_tokens == sum(r.usage.prompt_total for r in records)
    assert cost.totals.total_output_tokens == sum(r.usage.output for r in records)
    shares = {share.model: share for share in cost.model_distribution}
    assert [share.model for share in cost.model_distribution] == ["claude-sonnet-4-5", "gpt-4o", UNPRICED_MODEL]
    assert shares["gpt-4o"].llm_calls == 2
    assert shares["gpt-4o"].total_cost_usd == Decimal("0.0045")
    assert shares["claude-sonnet-4-5"].total_tokens_used == 3_900
    assert (shares[UNPRICED_MODEL].llm_calls, shares[UNPRICED_MODEL].unpriced_calls) == (1, 1)
    assert shares[UNPRICED_MODEL].total_cost_usd is None  # unknown, not free
    assert (shares["gpt-4o"].unpriced_calls, shares["gpt-4o"].total_cost_usd) == (0, Decimal("0.0045"))
    by_procedure = {usage.procedure: usage for usage in cost.by_procedure}
    _assert_figures(by_procedure["chat.sendMessage"], [records[0], *records[2:]])
    _assert_figures(by_procedure["chat.executeAction"], [records[1]])
    assert [row.call_id for row in cost.rows] == [r.call_id for r in reversed(records)]
    unpriced_row = cost.rows[1]
    assert unpriced_row.pricing_status == "unpriced"
    assert (unpriced_row.cost_usd, unpriced_row.costs_usd, unpriced_row.rates_usd_per_million_tokens) == (
        None,
        None,
        None,
    )
    claude_row = cost.rows[2]
    assert claude_row.costs_usd is not None
    assert claude_row.rates_usd_per_million_tokens is not None
    assert claude_row.rates_usd_per_million_tokens.cache_write_1h == Decimal(6)
    assert claude_row.costs_usd.cache_write_1h == Decimal("0.0006")
    assert cost.rows[0].status == "error"
    assert cost.rows[0].error_type == "RateLimitError"
    assert cost.next_cursor is None


async def test_conversation_cost_pages_its_usage_rows_newest_first() -> None:
    user, conversation = await new_user(), uuid.uuid4()
    records = [
        await record_call(at=T0 + timedelta(seconds=i), user_id=user, conversation_id=conversation) for i in range(7)
    ]
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = await get_usage_by_conversation(
            app_database(), ConversationCostInput(conversation_id=conversation, limit=3, cursor=cursor)
        )
        seen += [row.call_id for row in page.rows]
        pages += 1
        assert page.totals.llm_calls == 7
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == [r.call_id for r in reversed(records)]


async def test_conversation_cost_of_an_unknown_conversation_is_not_found() -> None:
    with pytest.raises(ConversationNotFoundError):
        await get_usage_by_conversation(app_database(), ConversationCostInput(conversation_id=uuid.uuid4()))


# --- admin.usageByDateRange ---------------------------------------------------------------------------------------


async def test_a_call_at_23_30_utc_falls_on_the_next_day_in_berlin() -> None:
    user = await new_user()
    late = await record_call(at=datetime(2026, 3, 10, 23, 30, tzinfo=UTC), user_id=user, conversation_id=None)
    start, end = datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 13, tzinfo=UTC)

    in_utc = await get_usage_by_date_range(
        app_database(), UsageByDateRangeInput(start=start, end=end, granularity="day", time_zone="UTC")
    )
    in_berlin = await get_usage_by_date_range(
        app_database(), UsageByDateRangeInput(start=start, end=end, granularity="day", time_zone="Europe/Berlin")
    )

    assert [b.start for b in in_utc.buckets] == [datetime(2026, 3, d, tzinfo=UTC) for d in (9, 10, 11, 12)]
    assert [b.llm_calls for b in in_utc.buckets] == [0, 1, 0, 0]
    # Berlin is UTC+1 in March: the window starts at 01:00 local on the 9th, in the bucket of the 9th.
    assert [b.start for b in in_berlin.buckets] == [datetime(2026, 3, d, tzinfo=BERLIN) for d in (9, 10, 11, 12, 13)]
    assert [b.llm_calls for b in in_berlin.buckets] == [0, 0, 1, 0, 0]
    _assert_figures(in_berlin.buckets[2], [late])
    _assert_figures(in_berlin.overall, [late])


async def test_an_empty_range_has_every_bucket_at_zero() -> None:
    user = await new_user()
    await record_call(at=datetime(2026, 1, 5, tzinfo=UTC), user_id=user, conversation_id=None)

    report = await get_usage_by_date_range(
        app_database(),
        UsageByDateRangeInput(
            start=datetime(2026, 2, 1, tzinfo=UTC),
            end=datetime(2026, 2, 8, tzinfo=UTC),
            granularity="day",
            time_zone="UTC",
        ),
    )

    assert len(report.buckets) == 7
    assert all(b.llm_calls == 0 and b.cost_usd == 0 and b.tokens.total == 0 for b in report.buckets)
    assert report.overall.llm_calls == 0
    assert report.overall.cost_usd == 0


async def test_week_buckets_start_on_monday_and_month_buckets_follow_daylight_saving_time() -> None:
    user = await new_user()
    # 2026-03-29 is the Sunday Berlin moves to summer time; 2026-03-30 is a Monday.
    sunday = await record_call(at=datetime(2026, 3, 29, 12, tzinfo=UTC), user_id=user, conversation_id=None)
    monday = await record_call(at=datetime(2026, 3, 30, 12, tzinfo=UTC), user_id=user, conversation_id=None)
    april = await record_call(at=datetime(2026, 4, 2, 12, tzinfo=UTC), user_id=user, conversation_id=None)
    start, end = datetime(2026, 3, 20, tzinfo=BERLIN), datetime(2026, 4, 10, tzinfo=BERLIN)

    weeks = await get_usage_by_date_range(
        app_database(), UsageByDateRangeInput(start=start, end=end, granularity="week", time_zone="Europe/Berlin")
    )
    months = await get_usage_by_date_range(
        app_database(), UsageByDateRangeInput(start=start, end=end, granularity="month", time_zone="Europe/Berlin")
    )

    assert [b.start for b in weeks.buckets] == [
        datetime(2026, 3, 16, tzinfo=BERLIN),
        datetime(2026, 3, 23, tzinfo=BERLIN),
        datetime(2026, 3, 30, tzinfo=BERLIN),
        datetime(2026, 4, 6, tzinfo=BERLIN),
    ]
    assert [b.llm_calls for b in weeks.buckets] == [0, 1, 2, 0]
    _assert_figures(weeks.buckets[2], [monday, april])
    assert [(b.start, b.start.utcoffset()) for b in months.buckets] == [
        (datetime(2026, 3, 1, tzinfo=BERLIN), timedelta(hours=1)),
        (datetime(2026, 4, 1, tzinfo=BERLIN), timedelta(hours=2)),
    ]
    _assert_figures(months.buckets[0], [sunday, monday])
    _assert_figures(months.buckets[1], [april])


async def test_unpriced_calls_are_counted_apart_and_never_as_zero_cost() -> None:
    user = await new_user()
    priced = await record_call(at=T0, user_id=user, conversation_id=None)
    unpriced = await record_call(at=T0 + timedelta(hours=1), user_id=user, conversation_id=None, model=UNPRICED_MODEL)

    report = await get_usage_by_date_range(
        app_database(), UsageByDateRangeInput(start=T0, end=T0 + timedelta(days=1), granularity="day", time_zone="UTC")
    )
    by_model = await get_usage_by_model(app_database(), UsageByModelInput(start=T0, end=T0 + timedelta(days=1)))

    assert report.overall.llm_calls == 2
    assert report.overall.unpriced_calls == 1
    assert report.overall.cost_usd == priced.priced.total_cost
    assert report.overall.tokens.total == 2 * 1_200
    models = {m.model: m for m in by_model.models}
    assert models[UNPRICED_MODEL].unpriced_calls == 1
    assert models[UNPRICED_MODEL].cost_usd is None
    _assert_figures(models[UNPRICED_MODEL], [unpriced])
    _assert_figures(models["gpt-4o"], [priced])


async def test_a_zone_with_a_half_hour_offset_buckets_exactly() -> None:
    user = await new_user()
    kolkata = ZoneInfo("Asia/Kolkata")
    before = await record_call(at=datetime(2026, 5, 1, 18, 20, tzinfo=UTC), user_id=user, conversation_id=None)
    after = await record_call(at=datetime(2026, 5, 1, 18, 40, tzinfo=UTC), user_id=user, conversation_id=None)

    report = await get_usage_by_date_range(
        app_database(),
        UsageByDateRangeInput(
            start=datetime(2026, 4, 30, tzinfo=kolkata),
            end=datetime(2026, 5, 4, tzinfo=kolkata),
            granularity="day",
            time_zone="Asia/Kolkata",
        ),
    )

    # Midnight in Kolkata is 18:30 UTC.
    assert [b.llm_calls for b in report.buckets] == [0, 1, 1, 0]
    _assert_figures(report.buckets[1], [before])
    _assert_figures(report.buckets[2], [after])


# --- windows: rollup periods plus edges read from rows ------------------------------------------------------------


async def test_a_zone_whose_offset_is_not_whole_quarter_hours_buckets_exactly() -> None:
    """Monrovia was 44 minutes 30 seconds behind UTC until 1972: its midnight fell inside a rollup period."""
    user = await new_user()
    monrovia = ZoneInfo("Africa/Monrovia")
    evening = await record_call(at=datetime(1971, 6, 1, 23, 50, tzinfo=UTC), user_id=user, conversation_id=None)
    late = await record_call(at=datetime(1971, 6, 2, 0, 30, tzinfo=UTC), user_id=user, conversation_id=None)

    report = await get_usage_by_date_range(
        app_database(),
        UsageByDateRangeInput(
            start=datetime(1971, 6, 1, tzinfo=monrovia),
            end=datetime(1971, 6, 3, tzinfo=monrovia),
            granularity="day",
            time_zone="Africa/Monrovia",
        ),
    )

    assert [b.start for b in report.buckets] == [datetime(1971, 6, d, tzinfo=monrovia) for d in (1, 2)]
    _assert_figures(report.buckets[0], [evening, late])


async def test_any_window_sums_exactly_what_its_rows_add_up_to() -> None:
    """Windows cut through the 15-minute rollup periods at arbitrary seconds; every figure must still be exact."""
    rng = random.Random(5)
    user = await new_user()
    models = ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", UNPRICED_MODEL)
    procedures = ("chat.sendMessage", "chat.executeAction", "chat.summarizeEmail")
    records = []
    for _ in range(120):
        at = T0 + timedelta(seconds=rng.randrange(0, 6 * 3600))
        records.append(
            await record_call(
                at=at,
                user_id=user,
                conversation_id=None,
                model=rng.choice(models),
                procedure=rng.choice(procedures),
                usage=tokens(rng.randrange(0, 5_000), cache_read=rng.randrange(0, 500), output=rng.randrange(1, 900)),
                status=rng.choice(("ok", "ok", "ok", "error", "cancelled")),
            )
        )
    windows: list[tuple[datetime | None, datetime | None]] = [(None, None), (T0, None), (None, T0 + timedelta(hours=3))]
    for _ in range(12):
        low, high = sorted(rng.sample(range(-600, 6 * 3600 + 600), 2))
        windows.append((T0 + timedelta(seconds=low), T0 + timedelta(seconds=high)))
    windows.append((T0 + timedelta(minutes=16), T0 + timedelta(minutes=29)))  # inside one period

    for start, end in windows:
        inside = [
            r for r in records if (start is None or r.created_at >= start) and (end is None or r.created_at < end)
        ]
        by_model = await get_usage_by_model(app_database(), UsageByModelInput(start=start, end=end))
        by_procedure = await get_usage_by_procedure(app_database(), UsageByProcedureInput(start=start, end=end))
        for usage in by_model.models:
            _assert_figures(usage, [r for r in inside if r.model == usage.model])
        assert sum(m.llm_calls for m in by_model.models) == len(inside)
        for procedure_usage in by_procedure.procedures:
            _assert_figures(procedure_usage, [r for r in inside if r.procedure == procedure_usage.procedure])
        assert sum(p.llm_calls for p in by_procedure.procedures) == len(inside)
        if start is not None and end is not None:
            report = await get_usage_by_date_range(
                app_database(),
                UsageByDateRangeInput(start=start, end=end, granularity="day", time_zone="America/St_Johns"),
            )
            _assert_figures(report.overall, inside)


# --- admin.usageByModel / admin.usageByProcedure ------------------------------------------------------------------


async def test_usage_by_model_narrows_to_one_model_and_orders_by_cost() -> None:
    user = await new_user()
    await record_call(at=T0, user_id=user, conversation_id=None, model="gemini-2.5-flash")
    sonnet = await record_call(at=T0, user_id=user, conversation_id=None, model="claude-sonnet-4-5")
    await record_call(at=T0, user_id=user, conversation_id=None, model="gpt-4o")

    everything = await get_usage_by_model(app_database(), UsageByModelInput())
    one = await get_usage_by_model(app_database(), UsageByModelInput(model="claude-sonnet-4-5"))

    assert [m.model for m in everything.models] == ["claude-sonnet-4-5", "gpt-4o", "gemini-2.5-flash"]
    assert [(m.model, m.provider) for m in one.models] == [("claude-sonnet-4-5", "anthropic")]
    _assert_figures(one.models[0], [sonnet])


async def test_usage_by_procedure_counts_errors_and_narrows_to_one_procedure() -> None:
    user = await new_user()
    sent = [
        await record_call(at=T0, user_id=user, conversation_id=None),
        await record_call(at=T0, user_id=user, conversation_id=None, status="error", usage=tokens(0, output=0)),
    ]
    summary = await record_call(at=T0, user_id=user, conversation_id=None, procedure="chat.summarizeEmail")

    everything = await get_usage_by_procedure(app_database(), UsageByProcedureInput())
    one = await get_usage_by_procedure(app_database(), UsageByProcedureInput(procedure="chat.summarizeEmail"))

    procedures = {p.procedure: p for p in everything.procedures}
    _assert_figures(procedures["chat.sendMessage"], sent)
    assert procedures["chat.sendMessage"].error_calls == 1
    assert [p.procedure for p in one.procedures] == ["chat.summarizeEmail"]
    _assert_figures(one.procedures[0], [summary])


# --- admin.topConversationsByCost ---------------------------------------------------------------------------------


async def test_top_conversations_are_ranked_by_cost_with_their_owner() -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    cheap, dear, middle = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await record_call(at=T0, user_id=alice, conversation_id=cheap, model="gemini-2.5-flash")
    await record_call(at=T0, user_id=bob, conversation_id=dear, model="claude-sonnet-4-5")
    await record_call(at=T0 + timedelta(days=1), user_id=bob, conversation_id=dear, model="claude-sonnet-4-5")
    await record_call(at=T0, user_id=alice, conversation_id=middle, model="gpt-4o")
    await record_call(at=T0 + timedelta(days=2), user_id=alice, conversation_id=middle, model="gpt-4o")

    top = await get_top_conversations_by_cost(app_database(), TopConversationsInput(limit=2))
    recent = await get_top_conversations_by_cost(app_database(), TopConversationsInput(start=T0 + timedelta(hours=12)))

    assert [c.conversation_id for c in top.conversations] == [dear, middle]
    assert top.conversations[0].owner_name == "bob"
    assert top.conversations[0].owner_id == bob
    assert top.conversations[0].totals.total_cost_usd == Decimal("0.012")
    assert top.conversations[0].totals.llm_calls == 2
    assert top.conversations[1].last_activity_at == T0 + timedelta(days=2)
    # Within the window each conversation counts only its calls inside it.
    assert [(c.conversation_id, c.totals.total_cost_usd) for c in recent.conversations] == [
        (dear, Decimal("0.006")),
        (middle, Decimal("0.0045")),
    ]


async def test_top_conversations_break_ties_by_id() -> None:
    user = await new_user()
    conversations = [uuid.uuid4() for _ in range(4)]
    for conversation in conversations:
        await record_call(at=T0, user_id=user, conversation_id=conversation)

    top = await get_top_conversations_by_cost(app_database(), TopConversationsInput(limit=3))

    assert [c.conversation_id for c in top.conversations] == sorted(conversations)[:3]


# --- admin.unpricedCalls ------------------------------------------------------------------------------------------


async def test_unpriced_calls_are_listed_by_model_and_paged_newest_first() -> None:
    user = await new_user()
    await record_call(at=T0, user_id=user, conversation_id=None)
    unpriced = [
        await record_call(
            at=T0 + timedelta(minutes=i), user_id=user, conversation_id=None, model=UNPRICED_MODEL, usage=tokens(100)
        )
        for i in range(5)
    ]

    first = await get_unpriced_calls(app_database(), UnpricedCallsInput(limit=2))
    assert first.unpriced_calls == 5
    assert [(m.model, m.provider, m.llm_calls) for m in first.models] == [(UNPRICED_MODEL, "openai", 5)]
    assert first.models[0].tokens.input == 500
    assert (first.models[0].first_at, first.models[0].last_at) == (T0, T0 + timedelta(minutes=4))
    seen = [row.call_id for row in first.rows]
    cursor = first.next_cursor
    while cursor is not None:
        page = await get_unpriced_calls(app_database(), UnpricedCallsInput(limit=2, cursor=cursor))
        seen += [row.call_id for row in page.rows]
        cursor = page.next_cursor
    assert seen == [r.call_id for r in reversed(unpriced)]

    windowed = await get_unpriced_calls(app_database(), UnpricedCallsInput(start=T0 + timedelta(minutes=3)))
    assert windowed.unpriced_calls == 2
    assert [row.call_id for row in windowed.rows] == [unpriced[4].call_id, unpriced[3].call_id]


# --- dashboard views ----------------------------------------------------------------------------------------------


async def test_dashboard_views_sum_the_usage_rows() -> None:
    user = await new_user()
    records = [
        await record_call(at=T0, user_id=user, conversation_id=None),
        await record_call(at=T0 + timedelta(hours=2), user_id=user, conversation_id=None, model=UNPRICED_MODEL),
        await record_call(
            at=T0 + timedelta(days=1), user_id=user, conversation_id=None, procedure="chat.summarizeEmail"
        ),
    ]
    database = app_database()

    daily = await database.fetch("SELECT * FROM usage_daily_by_procedure ORDER BY day, procedure")
    by_model = await database.fetch("SELECT * FROM usage_by_model ORDER BY model")
    calls = await database.fetch("SELECT * FROM usage_daily_calls ORDER BY day")

    assert [(r["day"].isoformat(), r["procedure"], r["calls"], r["unpriced_calls"]) for r in daily] == [
        ("2026-03-10", "chat.sendMessage", 2, 1),
        ("2026-03-11", "chat.summarizeEmail", 1, 0),
    ]
    assert daily[0]["cost_usd"] == records[0].priced.total_cost
    assert [(r["model"], r["calls"], r["cost_usd"]) for r in by_model] == [
        (UNPRICED_MODEL, 1, None),
        ("gpt-4o", 2, _cost(records)),
    ]
    assert [(r["calls"], r["ok_calls"]) for r in calls] == [(2, 2), (1, 1)]


# --- inputs -------------------------------------------------------------------------------------------------------


def test_start_must_come_before_end_and_the_error_names_the_field() -> None:
    with pytest.raises(InvalidInput) as raised:
        UsageByDateRangeInput(start=T0, end=T0, granularity="day", time_zone="UTC")
    assert raised.value.field == "end"
    with pytest.raises(msgspec.ValidationError, match="`end` must be after `start`"):
        codec.decoder(UsageByModelInput).decode(b'{"start":"2026-03-02T00:00:00Z","end":"2026-03-01T00:00:00Z"}')


def test_time_zones_must_be_iana_names() -> None:
    with pytest.raises(InvalidInput) as raised:
        UsageByDateRangeInput(start=T0, end=T0 + timedelta(days=1), granularity="day", time_zone="Mars/Olympus")
    assert raised.value.field == "timeZone"
    with pytest.raises(msgspec.ValidationError, match="timeZone"):
        _DATE_RANGE.decode(
            b'{"start":"2026-03-01T00:00:00Z","end":"2026-03-02T00:00:00Z","granularity":"day","timeZone":"localtime"}'
        )


def test_times_without_an_offset_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="needs an offset"):
        _DATE_RANGE.decode(
            b'{"start":"2026-03-01T00:00:00","end":"2026-03-02T00:00:00Z","granularity":"day","timeZone":"UTC"}'
        )


def test_limits_and_ranges_are_bounded() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$.limit"):
        codec.decoder(TopConversationsInput).decode(b'{"limit":1000}')
    with pytest.raises(msgspec.ValidationError, match=r"\$.limit"):
        codec.decoder(UnpricedCallsInput).decode(b'{"limit":0}')
    with pytest.raises(InvalidInput, match="at most 1100 days"):
        UsageByDateRangeInput(start=T0, end=T0 + timedelta(days=2_000), granularity="day", time_zone="UTC")
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        codec.decoder(TopConversationsInput).decode(b'{"limit":5,"offset":3}')


def test_a_cursor_must_be_one_the_server_returned() -> None:
    with pytest.raises(InvalidInput) as raised:
        ConversationCostInput(conversation_id=uuid.uuid4(), cursor="bm90LWEtY3Vyc29y")
    assert raised.value.field == "cursor"


OUT_OF_RANGE = [
    "0001-01-01T00:00:00+14:00",  # year 0 in UTC: Python cannot even convert it
    "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
    "0001-01-01T00:00:00Z",
    "9999-12-31T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:30:00+01:00",  # 1969 in UTC
    "9001-01-01T00:00:00Z",
]
IN_RANGE = ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00-14:00", "9000-12-31T23:59:59.999999Z"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("field", ["start", "end"])
@pytest.mark.parametrize(
    "input_type", [UsageByModelInput, UsageByProcedureInput, TopConversationsInput, UnpricedCallsInput]
)
def test_window_times_out_of_range_are_rejected_naming_the_field(
    input_type: type[UsageByModelInput], field: str, value: str
) -> None:
    message = f"`{field}` must be a time in the years 1970 to 9000 (UTC)"
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        codec.decoder(input_type).decode(msgspec.json.encode({field: value}))
    window: dict[str, Any] = {field: msgspec.json.decode(msgspec.json.encode(value), type=datetime)}
    with pytest.raises(InvalidInput) as raised:
        input_type(**window)
    assert raised.value.field == field


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_date_range_times_out_of_range_are_rejected_naming_the_field(value: str) -> None:
    usual = "2026-01-01T00:00:00Z"
    for field, window in [("start", {"start": value, "end": usual}), ("end", {"start": usual, "end": value})]:
        with pytest.raises(msgspec.ValidationError, match=f"`{field}` must be a time in the years 1970 to 9000"):
            _DATE_RANGE.decode(
                msgspec.json.encode({**window, "granularity": "month", "timeZone": "Pacific/Kiritimati"})
            )


@pytest.mark.parametrize("value", IN_RANGE)
def test_window_times_at_the_bounds_are_accepted(value: str) -> None:
    assert codec.decoder(UsageByModelInput).decode(msgspec.json.encode({"start": value})).start is not None
    assert codec.decoder(UnpricedCallsInput).decode(msgspec.json.encode({"end": value})).end is not None


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_a_cursor_out_of_range_is_not_a_cursor_this_server_returned(value: str) -> None:
    at = msgspec.json.decode(msgspec.json.encode(value), type=datetime)
    cursor = encode_cursor(Position(at=at, id=uuid.uuid4()))
    for make in (
        lambda: ConversationCostInput(conversation_id=uuid.uuid4(), cursor=cursor),
        lambda: UnpricedCallsInput(cursor=cursor),
        lambda: decode_cursor(cursor),
    ):
        with pytest.raises(InvalidInput) as raised:
            make()
        assert raised.value.field == "cursor"
    with pytest.raises(msgspec.ValidationError, match="`cursor` is not a cursor this server returned"):
        codec.decoder(UnpricedCallsInput).decode(msgspec.json.encode({"cursor": cursor}))


def test_every_window_takes_a_date_alone_as_its_utc_midnight() -> None:
    """``admin.usageByModel`` and the other windowed reads accept ``"2026-11-01"`` as ``usageByDateRange`` does."""
    for input_type in (UsageByModelInput, UnpricedCallsInput, TopConversationsInput):
        data = codec.decoder(input_type).decode(b'{"start":"2026-11-01","end":"2026-11-02T12:00:00+01:00"}')
        assert data.window() == (
            datetime(2026, 11, 1, tzinfo=UTC),
            datetime(2026, 11, 2, 11, tzinfo=UTC),
        )
    with pytest.raises(msgspec.ValidationError):
        codec.decoder(UsageByModelInput).decode(b'{"start":"2026-11-01T00:00:00"}')  # a time needs its offset


# --- the buckets split by model or procedure (the console's stacked chart) ----------------------------------------


@pytest.mark.parametrize(
    ("time_zone", "granularity"),
    [("UTC", "day"), ("Europe/Berlin", "day"), ("Asia/Kolkata", "day"), ("America/St_Johns", "hour")],
)
async def test_buckets_split_by_model_or_procedure_add_up_to_the_buckets(time_zone: str, granularity: str) -> None:
    rng = random.Random(11)
    user = await new_user()
    models = ("gpt-4o", "claude-sonnet-4-5", UNPRICED_MODEL)
    procedures = ("chat.sendMessage", "chat.executeAction")
    records = [
        await record_call(
            at=T0 + timedelta(seconds=rng.randrange(0, 40 * 3600)),
            user_id=user,
            conversation_id=None,
            model=rng.choice(models),
            procedure=rng.choice(procedures),
            usage=tokens(rng.randrange(0, 3_000), output=rng.randrange(1, 500)),
        )
        for _ in range(60)
    ]
    data = UsageByDateRangeInput(
        start=T0 - timedelta(minutes=7),
        end=T0 + timedelta(hours=41, minutes=3),
        granularity=granularity,  # type: ignore[arg-type]
        time_zone=time_zone,
    )
    report = await get_usage_by_date_range(app_database(), data)
    for by, key in (("model", lambda r: r.model), ("procedure", lambda r: r.procedure)):
        shares = await get_usage_by_date_range_and_group(app_database(), data, by)
        starts = [bucket.start for bucket in report.buckets]
        assert all(share.start in starts for share in shares)
        for index, bucket in enumerate(report.buckets):
            parts = [share for share in shares if share.start == bucket.start]
            assert sum(part.figures.llm_calls for part in parts) == bucket.llm_calls
            bucket_end = starts[index + 1] if index + 1 < len(starts) else report.end
            low = max(bucket.start, report.start)
            for part in parts:
                _assert_figures(
                    part.figures,
                    [r for r in records if low <= r.created_at < bucket_end and key(r) == part.key],
                )
