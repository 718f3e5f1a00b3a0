"""chat.listConversations and chat.getConversation: a user reads their own conversations, and only those."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest

from schemas import codec
from schemas.conversations import ConversationDetail, GetConversationInput, ListConversationsInput
from schemas.validation import InvalidInput, Position, encode_cursor
from server.conversations import get_conversation, list_conversations
from server.errors import ConversationNotFoundError
from tests.conftest import app_database
from tests.usage_records import UNPRICED_MODEL, new_user, record_call

pytestmark = pytest.mark.usefixtures("db")

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


async def test_a_user_lists_only_their_conversations_most_recent_activity_first() -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    old, recent = uuid.uuid4(), uuid.uuid4()
    await record_call(at=T0, user_id=alice, conversation_id=old, title="old")
    await record_call(at=T0 + timedelta(hours=1), user_id=alice, conversation_id=recent, title="recent")
    await record_call(at=T0 + timedelta(hours=2), user_id=bob, conversation_id=uuid.uuid4(), title="bob's")
    await record_call(at=T0 + timedelta(hours=3), user_id=alice, conversation_id=old)

    listed = await list_conversations(app_database(), alice)

    assert [(c.conversation_id, c.title) for c in listed.conversations] == [(old, "old"), (recent, "recent")]
    assert listed.conversations[0].last_activity_at == T0 + timedelta(hours=3)
    assert listed.conversations[0].created_at == T0
    assert listed.conversations[0].totals.llm_calls == 2
    assert listed.conversations[0].totals.total_cost_usd == Decimal("0.009")
    assert listed.next_cursor is None
    assert (await list_conversations(app_database(), await new_user("carol"))).conversations == []


async def test_conversations_are_paged_by_cursor_without_gaps_or_repeats() -> None:
    user = await new_user()
    conversations = [uuid.uuid4() for _ in range(5)]
    for minute, conversation in enumerate(conversations):
        await record_call(at=T0 + timedelta(minutes=minute), user_id=user, conversation_id=conversation)

    seen: list[uuid.UUID] = []
    cursor = None
    for _ in range(3):
        page = await list_conversations(app_database(), user, limit=2, cursor=cursor)
        seen += [c.conversation_id for c in page.conversations]
        cursor = page.next_cursor
    assert cursor is None
    assert seen == list(reversed(conversations))


async def test_a_conversation_reads_with_its_messages_in_order_and_its_totals() -> None:
    user, conversation = await new_user(), uuid.uuid4()
    first = await record_call(at=T0, user_id=user, conversation_id=conversation, reply="first reply")
    await record_call(
        at=T0 + timedelta(minutes=1),
        user_id=user,
        conversation_id=conversation,
        model=UNPRICED_MODEL,
        reply="second reply",
    )

    detail = await get_conversation(app_database(), user, conversation)

    assert [(m.role, m.content) for m in detail.messages] == [
        ("user", f"question at {T0.isoformat()}"),
        ("assistant", "first reply"),
        ("user", f"question at {(T0 + timedelta(minutes=1)).isoformat()}"),
        ("assistant", "second reply"),
    ]
    assert detail.totals.llm_calls == 2
    assert detail.totals.unpriced_calls == 1
    assert detail.totals.total_cost_usd == first.priced.total_cost
    assert [(s.model, s.llm_calls) for s in detail.model_distribution] == [("gpt-4o", 1), (UNPRICED_MODEL, 1)]
    assert detail.earlier_cursor is None
    wire = codec.encoder().encode(detail)
    assert msgspec.json.decode(wire)["totals"]["totalCostUsd"] == "0.0045"
    assert codec.decoder(ConversationDetail).decode(wire) == detail


async def test_earlier_messages_are_fetched_with_the_earlier_cursor() -> None:
    user, conversation = await new_user(), uuid.uuid4()
    for minute in range(3):
        await record_call(at=T0 + timedelta(minutes=minute), user_id=user, conversation_id=conversation)

    latest = await get_conversation(app_database(), user, conversation, limit=4)
    assert latest.earlier_cursor is not None
    earlier = await get_conversation(app_database(), user, conversation, limit=4, cursor=latest.earlier_cursor)

    assert earlier.earlier_cursor is None
    everything = [*earlier.messages, *latest.messages]
    assert len(everything) == 6
    assert [m.created_at for m in everything] == sorted(m.created_at for m in everything)
    assert [m.role for m in everything] == ["user", "assistant"] * 3


async def test_another_users_conversation_reads_exactly_like_a_missing_one() -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    bobs = uuid.uuid4()
    await record_call(at=T0, user_id=bob, conversation_id=bobs)
    missing = uuid.uuid4()

    with pytest.raises(ConversationNotFoundError) as someone_elses:
        await get_conversation(app_database(), alice, bobs)
    with pytest.raises(ConversationNotFoundError) as nobodys:
        await get_conversation(app_database(), alice, missing)

    assert str(someone_elses.value) == str(nobodys.value).replace(str(missing), str(bobs))
    assert (await get_conversation(app_database(), bob, bobs)).conversation_id == bobs
    assert bobs not in [c.conversation_id for c in (await list_conversations(app_database(), alice)).conversations]


async def test_limits_are_bounded() -> None:
    user = await new_user()
    with pytest.raises(InvalidInput) as raised:
        await list_conversations(app_database(), user, limit=0)
    assert raised.value.field == "limit"
    with pytest.raises(InvalidInput):
        await get_conversation(app_database(), user, uuid.uuid4(), limit=501)
    with pytest.raises(msgspec.ValidationError, match=r"\$.limit"):
        msgspec.json.decode(b'{"limit":101}', type=ListConversationsInput)
    with pytest.raises(msgspec.ValidationError, match="cursor"):
        msgspec.json.decode(
            b'{"conversationId":"00000000-0000-0000-0000-000000000001","cursor":"AAAA"}', type=GetConversationInput
        )


@pytest.mark.parametrize(
    "at",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
        datetime(1969, 12, 31, tzinfo=UTC),
    ],
)
async def test_a_cursor_out_of_range_is_rejected_before_any_query(at: datetime) -> None:
    """Such a time used to reach the query and fail there (OverflowError, asyncpg DataError): a 500."""
    user, conversation = await new_user(), uuid.uuid4()
    await record_call(at=T0, user_id=user, conversation_id=conversation)
    cursor = encode_cursor(Position(at=at, id=uuid.uuid4()))
    with pytest.raises(InvalidInput) as raised:
        await list_conversations(app_database(), user, cursor=cursor)
    assert raised.value.field == "cursor"
    with pytest.raises(InvalidInput) as raised:
        await get_conversation(app_database(), user, conversation, cursor=cursor)
    assert raised.value.field == "cursor"

    inputs: list[tuple[type[ListConversationsInput | GetConversationInput], dict[str, str]]] = [
        (ListConversationsInput, {"cursor": cursor}),
        (GetConversationInput, {"conversationId": str(conversation), "cursor": cursor}),
    ]
    for input_type, input in inputs:
        with pytest.raises(msgspec.ValidationError, match="`cursor` is not a cursor this server returned"):
            msgspec.json.decode(msgspec.json.encode(input), type=input_type)
