"""The usage reports of issue 9: unpriced groups cost null (never "0"), spend per user (admin.usageByUser and
chat.getMyUsage), failed calls, date-only bounds and hour buckets, and enum errors that name the allowed values."""

from __future__ import annotations

import importlib
import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest

from schemas import codec
from schemas.admin import (
    ConversationCostInput,
    DateBucket,
    FailedCallsInput,
    MyUsageInput,
    TopConversationsInput,
    UsageByDateRangeInput,
    UsageByModelInput,
    UsageByProcedureInput,
    UsageByUserInput,
)
from schemas.base import WireInput
from schemas.chat import ActionName, ExecuteActionInput, SendMessageInput
from schemas.router import APP_REGISTRY
from schemas.validation import InvalidInput
from server.admin.consistency import check_totals
from server.admin.queries import (
    get_failed_calls,
    get_my_usage,
    get_top_conversations_by_cost,
    get_usage_by_conversation,
    get_usage_by_date_range,
    get_usage_by_model,
    get_usage_by_procedure,
    get_usage_by_user,
)
from server.conversations import list_conversations
from server.llm.recorder import UsageRecord
from server.rpc.errors import TRPCError
from server.rpc.inputs import decode_input
from server.users import create_user
from tests.conftest import ServedApp, app_database
from tests.usage_records import UNPRICED_MODEL, new_user, record_call, tokens
from tollbooth_client import TollboothClient

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
GPT_4O_CALL = Decimal("0.0045")  # 1000 input x $2.50 + 200 output x $10 per 1M
SONNET_CALL = Decimal("0.006")  # 1000 input x $3 + 200 output x $15 per 1M
_DATE_RANGE = codec.decoder(UsageByDateRangeInput)
_MY_USAGE = codec.decoder(MyUsageInput)


def _in(records: Sequence[UsageRecord], start: datetime, end: datetime) -> list[UsageRecord]:
    return [r for r in records if start <= r.created_at < end]


# --- unpriced is not free -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("db")
async def test_a_group_whose_calls_are_all_unpriced_costs_null_in_every_report() -> None:
    user = await new_user()
    priced_conversation, unpriced_conversation = uuid.uuid4(), uuid.uuid4()
    await record_call(at=T0, user_id=user, conversation_id=priced_conversation)
    for minutes in (60, 61, 62):  # more calls than the priced model: still listed after it
        await record_call(
            at=T0 + timedelta(minutes=minutes),
            user_id=user,
            conversation_id=unpriced_conversation,
            model=UNPRICED_MODEL,
        )
    await record_call(
        at=T0 + timedelta(days=1),
        user_id=user,
        conversation_id=None,
        model=UNPRICED_MODEL,
        procedure="chat.summarizeEmail",
    )
    db = app_database()

    by_model = await get_usage_by_model(db, UsageByModelInput())
    by_procedure = await get_usage_by_procedure(db, UsageByProcedureInput())
    by_day = await get_usage_by_date_range(
        db, UsageByDateRangeInput(start=date(2026, 3, 9), end=date(2026, 3, 13), granularity="day")
    )
    only_unpriced_day = await get_usage_by_date_range(
        db, UsageByDateRangeInput(start=date(2026, 3, 11), end=date(2026, 3, 12), granularity="day")
    )

    assert [(m.model, m.llm_calls, m.cost_usd) for m in by_model.models] == [
        ("gpt-4o", 1, GPT_4O_CALL),
        (UNPRICED_MODEL, 4, None),
    ]
    assert [(p.procedure, p.unpriced_calls, p.cost_usd) for p in by_procedure.procedures] == [
        ("chat.sendMessage", 3, GPT_4O_CALL),  # some calls priced: the sum of those
        ("chat.summarizeEmail", 1, None),
    ]
    assert [(b.start.day, b.llm_calls, b.cost_usd) for b in by_day.buckets] == [
        (9, 0, Decimal(0)),  # no calls: nothing was spent
        (10, 4, GPT_4O_CALL),
        (11, 1, None),
        (12, 0, Decimal(0)),
    ]
    assert (by_day.overall.unpriced_calls, by_day.overall.cost_usd) == (4, GPT_4O_CALL)
    assert (only_unpriced_day.overall.llm_calls, only_unpriced_day.overall.cost_usd) == (1, None)

    unpriced = await get_usage_by_conversation(db, ConversationCostInput(conversation_id=unpriced_conversation))
    assert (unpriced.totals.llm_calls, unpriced.totals.unpriced_calls, unpriced.totals.total_cost_usd) == (3, 3, None)
    assert [(s.model, s.unpriced_calls, s.total_cost_usd) for s in unpriced.model_distribution] == [
        (UNPRICED_MODEL, 3, None)
    ]
    top = await get_top_conversations_by_cost(db, TopConversationsInput())
    assert [(c.conversation_id, c.totals.total_cost_usd) for c in top.conversations] == [
        (priced_conversation, GPT_4O_CALL),
        (unpriced_conversation, None),
    ]
    windowed = await get_top_conversations_by_cost(db, TopConversationsInput(start=T0 + timedelta(minutes=30)))
    assert [(c.conversation_id, c.totals.total_cost_usd) for c in windowed.conversations] == [
        (unpriced_conversation, None)
    ]
    listed = await list_conversations(db, user)
    assert {c.conversation_id: c.totals.total_cost_usd for c in listed.conversations} == {
        priced_conversation: GPT_4O_CALL,
        unpriced_conversation: None,
    }

    daily = await db.fetch("SELECT day, procedure, unpriced_calls, cost_usd FROM usage_daily_by_procedure ORDER BY 1")
    views_by_model = await db.fetch("SELECT model, unpriced_calls, cost_usd FROM usage_by_model ORDER BY model")
    assert [(r["day"].day, r["procedure"], r["unpriced_calls"], r["cost_usd"]) for r in daily] == [
        (10, "chat.sendMessage", 3, GPT_4O_CALL),
        (11, "chat.summarizeEmail", 1, None),
    ]
    assert [(r["model"], r["unpriced_calls"], r["cost_usd"]) for r in views_by_model] == [
        (UNPRICED_MODEL, 4, None),
        ("gpt-4o", 0, GPT_4O_CALL),
    ]


@pytest.mark.usefixtures("db")
async def test_the_migration_backfills_each_models_unpriced_calls() -> None:
    """Conversations recorded before the migration had no per-model ``unpriced``: its backfill derives them."""
    migration = importlib.import_module("piccolo_migrations.server_2026_11_29t14_20_00_000000")
    [strip] = [s for s in migration.BACKWARDS if "UPDATE conversations" in s]
    [backfill] = [s for s in migration.FORWARDS if "UPDATE conversations" in s]
    user, conversation = await new_user(), uuid.uuid4()
    await record_call(at=T0, user_id=user, conversation_id=conversation)
    await record_call(at=T0, user_id=user, conversation_id=conversation, model=UNPRICED_MODEL)
    await record_call(at=T0, user_id=user, conversation_id=conversation, model=UNPRICED_MODEL)
    db = app_database()
    await db.execute(strip)
    stored = json.loads(await db.fetchval("SELECT model_distribution::text FROM conversations"))
    assert all("unpriced" not in share for share in stored.values())

    await db.execute(backfill)

    stored = json.loads(await db.fetchval("SELECT model_distribution::text FROM conversations"))
    assert {model: share["unpriced"] for model, share in stored.items()} == {"gpt-4o": 0, UNPRICED_MODEL: 2}
    assert (await check_totals(db)).consistent


# --- admin.usageByUser --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("db")
async def test_usage_by_user_ranks_users_by_what_they_spent_in_and_outside_conversations() -> None:
    alice, bob, carol = [(await create_user(name)).id for name in ("alice", "bob", "carol")]
    await record_call(at=T0, user_id=alice, conversation_id=uuid.uuid4())
    await record_call(at=T0 + timedelta(hours=1), user_id=alice, conversation_id=None, procedure="chat.executeAction")
    await record_call(at=T0, user_id=bob, conversation_id=None, model="claude-sonnet-4-5")
    await record_call(at=T0, user_id=carol, conversation_id=None, model=UNPRICED_MODEL)
    db = app_database()

    everyone = await get_usage_by_user(db, UsageByUserInput())
    top_two = await get_usage_by_user(db, UsageByUserInput(limit=2))
    only_bob = await get_usage_by_user(db, UsageByUserInput(user_id=bob))
    before_alices_second = await get_usage_by_user(db, UsageByUserInput(end=T0 + timedelta(minutes=30)))

    assert [(u.name, u.user_id, u.llm_calls, u.unpriced_calls, u.cost_usd) for u in everyone.users] == [
        ("alice", alice, 2, 0, 2 * GPT_4O_CALL),
        ("bob", bob, 1, 0, SONNET_CALL),
        ("carol", carol, 1, 1, None),  # unknown cost: last, never "free"
    ]
    assert everyone.users[0].tokens.total == 2 * 1_200
    assert [u.name for u in top_two.users] == ["alice", "bob"]
    assert [(u.name, u.cost_usd) for u in only_bob.users] == [("bob", SONNET_CALL)]
    assert [(u.name, u.cost_usd) for u in before_alices_second.users] == [
        ("bob", SONNET_CALL),
        ("alice", GPT_4O_CALL),
        ("carol", None),
    ]


# --- chat.getMyUsage ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("db")
async def test_my_usage_counts_my_calls_in_and_outside_conversations_by_day_and_model() -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    await record_call(at=T0, user_id=alice, conversation_id=uuid.uuid4())
    await record_call(
        at=T0 + timedelta(hours=2),
        user_id=alice,
        conversation_id=None,
        procedure="chat.executeAction",
        model="claude-sonnet-4-5",
    )
    await record_call(
        at=T0 + timedelta(days=1),
        user_id=alice,
        conversation_id=None,
        procedure="chat.summarizeEmail",
        model=UNPRICED_MODEL,
    )
    await record_call(at=T0, user_id=bob, conversation_id=None, model="claude-sonnet-4-5")

    mine = await get_my_usage(app_database(), alice, _MY_USAGE.decode(b'{"start": "2026-03-10", "end": "2026-03-12"}'))

    assert (mine.start, mine.end, mine.granularity, mine.time_zone) == (
        datetime(2026, 3, 10, tzinfo=UTC),
        datetime(2026, 3, 12, tzinfo=UTC),
        "day",
        "UTC",
    )
    assert [(b.start.day, b.llm_calls, b.cost_usd) for b in mine.buckets] == [
        (10, 2, GPT_4O_CALL + SONNET_CALL),
        (11, 1, None),
    ]
    assert [(m.model, m.cost_usd) for m in mine.models] == [
        ("claude-sonnet-4-5", SONNET_CALL),
        ("gpt-4o", GPT_4O_CALL),
        (UNPRICED_MODEL, None),
    ]
    assert (mine.overall.llm_calls, mine.overall.unpriced_calls, mine.overall.cost_usd) == (
        3,
        1,
        GPT_4O_CALL + SONNET_CALL,
    )


@pytest.mark.parametrize(
    ("granularity", "time_zone", "start", "end"),
    [
        ("day", "UTC", datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=UTC)),
        ("hour", "UTC", datetime(2026, 3, 10, 13, tzinfo=UTC), datetime(2026, 3, 11, 13, tzinfo=UTC)),
        # 2026-03-11 is a Wednesday: twelve weeks from Monday 2025-12-22 to Monday 2026-03-16.
        ("week", "Europe/Berlin", datetime(2025, 12, 22, tzinfo=BERLIN), datetime(2026, 3, 16, tzinfo=BERLIN)),
        ("month", "Europe/Berlin", datetime(2025, 4, 1, tzinfo=BERLIN), datetime(2026, 4, 1, tzinfo=BERLIN)),
    ],
)
def test_my_usage_defaults_to_the_last_whole_buckets_up_to_the_current_one(
    granularity: Literal["hour", "day", "week", "month"], time_zone: str, start: datetime, end: datetime
) -> None:
    now = datetime(2026, 3, 11, 12, 30, tzinfo=UTC)
    assert MyUsageInput(granularity=granularity, time_zone=time_zone).bounds(now) == (start, end)


def test_my_usage_with_only_an_end_holds_the_default_buckets_before_it() -> None:
    data = _MY_USAGE.decode(b'{"end": "2026-03-11", "granularity": "day"}')
    assert data.bounds(T0) == (datetime(2026, 2, 9, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))
    with pytest.raises(InvalidInput) as raised:
        _MY_USAGE.decode(b'{"start": "2020-01-01", "granularity": "day"}').bounds(T0)
    assert raised.value.field == "end"


async def test_my_usage_over_http_includes_actions_outside_conversations(client: TollboothClient) -> None:
    sent = await client.chat.send_message(SendMessageInput(message="What is a token?", model="gpt-4o"))
    acted = await client.chat.execute_action(ExecuteActionInput(action="classify_intent", text="Meet Tuesday?"))
    assert acted.conversation_id is None

    mine = await client.chat.get_my_usage(MyUsageInput())

    assert mine.overall.llm_calls == sent.llm_calls + acted.llm_calls
    assert mine.overall.cost_usd == (sent.cost_usd or 0) + (acted.cost_usd or 0)
    assert mine.buckets[-1].llm_calls == mine.overall.llm_calls  # today, the last of 30 days
    assert len(mine.buckets) == 30


# --- admin.failedCalls --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("db")
async def test_failed_calls_are_counted_by_error_type_and_paged_newest_first() -> None:
    user = await new_user()
    failed: dict[str, Any] = {"user_id": user, "conversation_id": None, "usage": tokens(0, output=0)}
    await record_call(at=T0, user_id=user, conversation_id=None)
    rate_limited = [await record_call(at=T0 + timedelta(minutes=m), status="error", **failed) for m in (1, 2)]
    timed_out = await record_call(
        at=T0 + timedelta(minutes=3),
        status="error",
        error_type="APITimeoutError",
        procedure="chat.executeAction",
        model="claude-sonnet-4-5",
        **failed,
    )
    cancelled = await record_call(at=T0 + timedelta(minutes=4), status="cancelled", error_type="Cancelled", **failed)
    db = app_database()

    everything = await get_failed_calls(db, FailedCallsInput(limit=3))
    rest = await get_failed_calls(db, FailedCallsInput(limit=3, cursor=everything.next_cursor))
    by_procedure = await get_failed_calls(db, FailedCallsInput(procedure="chat.executeAction"))
    by_model = await get_failed_calls(db, FailedCallsInput(model="gpt-4o"))
    recent = await get_failed_calls(db, FailedCallsInput(start=T0 + timedelta(minutes=3)))

    assert (everything.error_calls, everything.cancelled_calls) == (3, 1)
    assert [(t.status, t.error_type, t.llm_calls, t.last_at) for t in everything.error_types] == [
        ("error", "RateLimitError", 2, T0 + timedelta(minutes=2)),
        ("cancelled", "Cancelled", 1, T0 + timedelta(minutes=4)),
        ("error", "APITimeoutError", 1, T0 + timedelta(minutes=3)),
    ]
    newest_first = [cancelled, timed_out, *reversed(rate_limited)]
    assert [row.call_id for row in [*everything.rows, *rest.rows]] == [r.call_id for r in newest_first]
    assert rest.next_cursor is None
    assert [row.call_id for row in by_procedure.rows] == [timed_out.call_id]
    assert (by_procedure.error_calls, by_procedure.cancelled_calls) == (1, 0)
    assert (by_model.error_calls, by_model.cancelled_calls) == (2, 1)
    assert [row.call_id for row in recent.rows] == [cancelled.call_id, timed_out.call_id]


# --- admin.usageByDateRange: dates alone, hours -------------------------------------------------------------------


def test_a_date_alone_is_its_midnight_in_the_time_zone() -> None:
    berlin = _DATE_RANGE.decode(
        b'{"start": "2026-03-10", "end": "2026-03-12T06:00:00+01:00", "granularity": "day",'
        b' "timeZone": "Europe/Berlin"}'
    )
    utc = _DATE_RANGE.decode(b'{"start": "2026-03-10", "end": "2026-03-12", "granularity": "week"}')
    # Santiago's clocks jump from 00:00 to 01:00 on 2026-09-06: the day begins at 01:00.
    santiago = _DATE_RANGE.decode(
        b'{"start": "2026-09-06", "end": "2026-09-07", "granularity": "hour", "timeZone": "America/Santiago"}'
    )

    assert berlin.bounds() == (datetime(2026, 3, 10, tzinfo=BERLIN), datetime(2026, 3, 12, 5, tzinfo=UTC))
    assert (utc.time_zone, utc.bounds()) == (
        "UTC",
        (datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=UTC)),
    )
    assert santiago.bounds()[0] == datetime(2026, 9, 6, 4, tzinfo=UTC)
    assert UsageByDateRangeInput(start=date(2026, 3, 10), end=date(2026, 3, 11), granularity="day").bounds() == (
        datetime(2026, 3, 10, tzinfo=UTC),
        datetime(2026, 3, 11, tzinfo=UTC),
    )


def test_a_date_alone_travels_as_a_date_and_a_time_as_a_time() -> None:
    decoded = _DATE_RANGE.decode(b'{"start": "2026-03-10", "end": "2026-03-12T06:00:00Z", "granularity": "day"}')
    built = UsageByDateRangeInput(start=date(2026, 3, 10), end=datetime(2026, 3, 12, 6, tzinfo=UTC), granularity="day")
    for data in (decoded, built):
        wire = json.loads(codec.encoder().encode(data))
        assert (wire["start"], wire["end"]) == ("2026-03-10", "2026-03-12T06:00:00Z")
        assert _DATE_RANGE.decode(codec.encoder().encode(data)).bounds() == data.bounds()


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ("2026-03-10T00:00:00", "needs an offset"),  # a naive time, even at midnight: refused, not guessed
        ("2026-03-10T09:30:00", "needs an offset"),
        ("2026-02-30", "Invalid date"),
        ("10/03/2026", "Expected a date"),
    ],
)
def test_a_bound_must_be_a_date_or_a_time_with_an_offset(start: str, message: str) -> None:
    wire = msgspec.json.encode({"start": start, "end": "2026-04-01", "granularity": "day"})
    with pytest.raises(msgspec.ValidationError, match=message) as raised:
        _DATE_RANGE.decode(wire)
    assert "$.start" in str(raised.value)
    with pytest.raises(InvalidInput) as invalid:
        UsageByDateRangeInput(start=datetime(2026, 3, 10, 9, 30), end=date(2026, 4, 1), granularity="day")  # noqa: DTZ001
    assert invalid.value.field == "start"


@pytest.mark.parametrize(("granularity", "days"), [("hour", 45), ("day", 1_100), ("week", 3_660), ("month", 3_660)])
def test_each_granularity_has_a_documented_longest_range(
    granularity: Literal["hour", "day", "week", "month"], days: int
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    UsageByDateRangeInput(start=start, end=start + timedelta(days=days), granularity=granularity)
    with pytest.raises(InvalidInput, match=f"at most {days} days"):
        UsageByDateRangeInput(start=start, end=start + timedelta(days=days + 1), granularity=granularity)
    description = msgspec.json.schema(UsageByDateRangeInput)["$defs"]["UsageByDateRangeInput"]["properties"]
    assert f"`{granularity}` (windows of at most {days:,} days)" in description["granularity"]["description"]


def _assert_buckets_hold_their_calls(
    buckets: Sequence[DateBucket], records: Sequence[UsageRecord], start: datetime, end: datetime
) -> None:
    edges = [*(b.start for b in buckets[1:]), end]
    for bucket, bucket_end in zip(buckets, edges, strict=True):
        inside = _in(records, max(bucket.start, start), bucket_end)
        assert bucket.llm_calls == len(inside), bucket.start
        assert bucket.tokens.total == sum(r.usage.prompt_total + r.usage.output for r in inside)


@pytest.mark.usefixtures("db")
async def test_hour_buckets_follow_the_clock_when_it_goes_back_and_forward() -> None:
    user = await new_user()
    records = [  # 02:30 CEST, then 02:30 CET
        await record_call(at=datetime(2026, 10, 25, 0, 30, tzinfo=UTC), user_id=user, conversation_id=None),
        await record_call(at=datetime(2026, 10, 25, 1, 30, tzinfo=UTC), user_id=user, conversation_id=None),
    ]
    db = app_database()
    autumn_window = _DATE_RANGE.decode(
        b'{"start": "2026-10-25", "end": "2026-10-25T06:00:00+01:00", "granularity": "hour",'
        b' "timeZone": "Europe/Berlin"}'
    )

    autumn = await get_usage_by_date_range(db, autumn_window)
    spring = await get_usage_by_date_range(
        db,
        _DATE_RANGE.decode(
            b'{"start": "2026-03-29", "end": "2026-03-29T05:00:00+02:00", "granularity": "hour",'
            b' "timeZone": "Europe/Berlin"}'
        ),
    )

    # Berlin goes from 03:00 CEST back to 02:00 CET: 02:00 comes twice, once per offset.
    assert [(b.start.hour, b.start.utcoffset()) for b in autumn.buckets] == [
        (0, timedelta(hours=2)),
        (1, timedelta(hours=2)),
        (2, timedelta(hours=2)),
        (2, timedelta(hours=1)),
        (3, timedelta(hours=1)),
        (4, timedelta(hours=1)),
        (5, timedelta(hours=1)),
    ]
    assert [b.llm_calls for b in autumn.buckets] == [0, 0, 1, 1, 0, 0, 0]
    _assert_buckets_hold_their_calls(autumn.buckets, records, *autumn_window.bounds())
    # ...and from 02:00 CET forward to 03:00 CEST: there is no 02:00.
    assert [b.start.hour for b in spring.buckets] == [0, 1, 3, 4]


@pytest.mark.usefixtures("db")
async def test_hour_buckets_are_exact_in_any_zone_and_window() -> None:
    """Hours of zones a half hour off UTC, windows cut at arbitrary seconds: rollup periods and edge rows add up."""
    rng = random.Random(9)
    user = await new_user()
    records = [
        await record_call(
            at=T0 + timedelta(seconds=rng.randrange(0, 8 * 3600)),
            user_id=user,
            conversation_id=None,
            model=rng.choice(("gpt-4o", UNPRICED_MODEL)),
            usage=tokens(rng.randrange(0, 3_000), output=rng.randrange(1, 500)),
        )
        for _ in range(80)
    ]
    for time_zone in ("Asia/Kolkata", "America/St_Johns", "UTC"):
        for _ in range(4):
            low, high = sorted(rng.sample(range(-900, 8 * 3600 + 900), 2))
            start, end = T0 + timedelta(seconds=low), T0 + timedelta(seconds=high)
            report = await get_usage_by_date_range(
                app_database(),
                UsageByDateRangeInput(start=start, end=end, granularity="hour", time_zone=time_zone),
            )
            zone = ZoneInfo(time_zone)
            assert all(b.start.astimezone(zone).minute == 0 for b in report.buckets)
            _assert_buckets_hold_their_calls(report.buckets, records, start, end)
            assert report.overall.llm_calls == len(_in(records, start, end))


# --- enum errors name the allowed values --------------------------------------------------------------------------


class _Colour(Enum):
    RED = "red"
    GREEN = "green"


class _Item(WireInput, frozen=True, kw_only=True):
    size: Literal["s", "m"] | None = None
    colour: _Colour = _Colour.RED


class _Order(WireInput, frozen=True, kw_only=True):
    items: list[_Item]
    by_id: dict[str, Literal[1, 2]] = msgspec.field(default_factory=dict)


def _bad_request(path: str, input_type: type[msgspec.Struct], raw: bytes) -> str:
    with pytest.raises(TRPCError) as raised:
        decode_input(path, codec.decoder(input_type), raw)
    assert raised.value.code.name == "BAD_REQUEST"
    return raised.value.message


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        (
            "admin.usageByDateRange",
            b'{"start": "2026-03-01", "end": "2026-03-02", "granularity": "year"}',
            "Expected one of 'hour', 'day', 'week', 'month', got 'year' - at `$.granularity`",
        ),
        (
            "admin.usageByDateRange",
            b'{"start": "2026-03-01", "end": "2026-03-02", "granularity": 3}',
            "Expected one of 'hour', 'day', 'week', 'month', got `int` - at `$.granularity`",
        ),
        (
            "chat.executeAction",
            b'{"action": "translate", "text": "x"}',
            f"Expected one of {', '.join(map(repr, get_args(ActionName)))}, got 'translate' - at `$.action`",
        ),
        (
            "admin.usageByModel",  # not a field of fixed values: msgspec's own message
            b'{"start": 3}',
            "Expected a date or a time as a string, got `int` - at `$.start`",
        ),
    ],
)
def test_a_bad_value_of_a_procedure_input_names_the_allowed_ones(path: str, raw: bytes, message: str) -> None:
    procedure = APP_REGISTRY.get(path)
    assert procedure is not None
    assert procedure.input is not None
    assert _bad_request(path, procedure.input, raw) == message


def test_enum_errors_name_the_allowed_values_in_nested_lists_dicts_and_enums() -> None:
    assert (
        _bad_request("t.order", _Order, b'{"items": [{"size": "s"}, {"size": "xl"}]}')
        == "Expected one of 's', 'm' or null, got 'xl' - at `$.items[1].size`"
    )
    assert (
        _bad_request("t.order", _Order, b'{"items": [{"colour": "blue"}]}')
        == "Expected one of 'red', 'green', got 'blue' - at `$.items[0].colour`"
    )
    assert (
        _bad_request("t.order", _Order, b'{"items": [], "byId": {"a": 3}}')
        == "Expected one of 1, 2, got 3 - at `$.byId[...]`"
    )
    assert _bad_request("t.order", _Order, b'{"items": 3}') == "Expected `array`, got `int` - at `$.items`"


async def test_an_enum_error_over_http_names_the_allowed_values(app_server: ServedApp) -> None:
    admin = await create_user("root", is_admin=True)
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc") as http:
        response = await http.get(
            "/admin.usageByDateRange",
            params={"input": json.dumps({"start": "2026-03-01", "end": "2026-03-02", "granularity": "fortnight"})},
            headers={"authorization": f"Bearer {admin.api_key}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["data"]["code"] == "BAD_REQUEST"
    assert error["message"] == ("Expected one of 'hour', 'day', 'week', 'month', got 'fortnight' - at `$.granularity`")
