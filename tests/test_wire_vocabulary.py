"""One wire vocabulary: every procedure's input and output spells each concept one way (``schemas/usage.py``
lists the terms; README, "One vocabulary").

The test walks the type graph of the whole registry with ``msgspec.inspect``, so a procedure added tomorrow is held
to the same words without being named here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import msgspec
import pytest

from schemas import codec
from schemas.money import MONEY_PATTERN, Money, format_money, parse_money
from schemas.router import APP_REGISTRY
from server.typescript import render_app_router

_CAMEL: Final = re.compile(r"^[a-z][a-zA-Z0-9]*$")
_DIGIT_THEN_CAPITAL: Final = re.compile(r"[0-9][A-Z]")
SECOND_SPELLINGS: Final = {
    "id": "name the entity: conversationId, messageId, userId, callId",
    "calls": "llmCalls",
    "usageEstimated": "estimated (inside usage)",
    "totalCompletionTokens": "totalOutputTokens (it sums the output buckets)",
    "items": "a plural naming what is listed (conversations, rows, models)",
    "rates": "ratesUsdPerMillionTokens",
    "costs": "costsUsd",
}
BUCKETS: Final = frozenset({"input", "cacheRead", "cacheWrite5m", "cacheWrite1h", "output", "outputImage"})
"""Keys of token, rate and cost objects alike: tokens are integers, rates and costs are Money."""
ONE_NAME_TWO_CONCEPTS: Final = {
    "status": "a call's status (ok/error/cancelled) and the service's health (ok/degraded)",
}
NOT_A_UUID_ID: Final = frozenset({"lastEventId"})
"""tRPC's own name for the SSE ``Last-Event-ID`` a resumable subscription takes: an opaque string."""


def _structs() -> Iterator[tuple[str, msgspec.inspect.StructType]]:
    """Every Struct reachable from a procedure's input or output, with the procedure that reaches it first."""
    seen: set[type[Any]] = set()
    for procedure in APP_REGISTRY:
        roots = [t for t in (procedure.input, procedure.output) if t is not None]
        pending: list[Any] = list(msgspec.inspect.multi_type_info(roots))
        while pending:
            node = pending.pop()
            if isinstance(node, msgspec.inspect.StructType):
                if node.cls in seen:
                    continue
                seen.add(node.cls)
                yield procedure.path, node
                pending.extend(field.type for field in node.fields)
            elif isinstance(node, msgspec.inspect.UnionType):
                pending.extend(node.types)
            elif isinstance(node, msgspec.inspect.Metadata):
                pending.append(node.type)
            elif isinstance(node, msgspec.inspect.ListType | msgspec.inspect.SetType | msgspec.inspect.FrozenSetType):
                pending.append(node.item_type)
            elif isinstance(node, msgspec.inspect.DictType):
                pending.extend((node.key_type, node.value_type))


def _fields() -> Iterator[tuple[str, str, msgspec.inspect.Field]]:
    for path, struct in _structs():
        for field in struct.fields:
            yield path, struct.cls.__name__, field


def _signature(node: Any) -> str:
    """A type as the wire sees it: constraints and nullability left out (they may differ between input and output)."""
    if isinstance(node, msgspec.inspect.Metadata):
        return _signature(node.type)
    if isinstance(node, msgspec.inspect.UnionType):
        members = sorted({_signature(t) for t in node.types if not isinstance(t, msgspec.inspect.NoneType)})
        return " | ".join(members)
    if isinstance(node, msgspec.inspect.LiteralType):
        return f"Literal{sorted(map(str, node.values))}"
    if isinstance(node, msgspec.inspect.StructType):
        return node.cls.__name__
    if isinstance(node, msgspec.inspect.CustomType):
        # DateOrTime (a date alone or a time) is a time once resolved: `start` is one concept.
        return "datetime" if issubclass(node.cls, datetime) else node.cls.__name__
    if isinstance(node, msgspec.inspect.ListType):
        # A list is named for what it lists (`conversations`): its items may be different views of that thing.
        item = node.item_type
        return "list[struct]" if isinstance(item, msgspec.inspect.StructType) else f"list[{_signature(item)}]"
    if isinstance(node, msgspec.inspect.DictType):
        return f"dict[{_signature(node.key_type)}, {_signature(node.value_type)}]"
    return type(node).__name__.removesuffix("Type").lower()


def _all_money(node: Any) -> bool:
    """A Struct (possibly nullable) whose fields are all amounts: bucket costs, bucket rates."""
    if isinstance(node, msgspec.inspect.UnionType):
        return all(_all_money(t) for t in node.types if not isinstance(t, msgspec.inspect.NoneType))
    return isinstance(node, msgspec.inspect.StructType) and all(_signature(f.type) == "Money" for f in node.fields)


def test_every_field_name_is_lower_camel_case_with_lowercase_units() -> None:
    bad = [
        f"{path}: {owner}.{field.encode_name}"
        for path, owner, field in _fields()
        if not _CAMEL.match(field.encode_name) or _DIGIT_THEN_CAPITAL.search(field.encode_name)
    ]
    assert not bad, "write cacheWrite5m, not cacheWrite5M:\n" + "\n".join(bad)


def test_no_field_uses_a_second_spelling_of_a_known_concept() -> None:
    bad = [
        f"{path}: {owner}.{field.encode_name} (use {SECOND_SPELLINGS[field.encode_name]})"
        for path, owner, field in _fields()
        if field.encode_name in SECOND_SPELLINGS
    ]
    assert not bad, "\n".join(bad)


def test_one_name_has_one_type_everywhere() -> None:
    types: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, owner, field in _fields():
        if field.encode_name in BUCKETS or field.encode_name in ONE_NAME_TWO_CONCEPTS:
            continue
        types[field.encode_name][_signature(field.type)].append(f"{owner} ({path})")
    clashes = {name: dict(by_type) for name, by_type in types.items() if len(by_type) > 1}
    assert not clashes, "\n".join(f"{name}: {by_type}" for name, by_type in clashes.items())


def test_bucket_keys_are_token_counts_or_money() -> None:
    bad = [
        f"{owner}.{field.encode_name}: {_signature(field.type)}"
        for _, owner, field in _fields()
        if field.encode_name in BUCKETS and _signature(field.type) not in ("int", "Money")
    ]
    assert not bad, "\n".join(bad)


def test_money_is_the_money_type_and_says_usd() -> None:
    bad = []
    for _, owner, field in _fields():
        name, signature = field.encode_name, _signature(field.type)
        if "decimal" in signature:
            bad.append(f"{owner}.{name} is a plain Decimal: use schemas.money.Money")
        if name.endswith("Usd") and signature != "Money" and not _all_money(field.type):
            bad.append(f"{owner}.{name} ends in Usd but is {signature}")
        if signature == "Money" and not name.endswith("Usd") and name not in BUCKETS:
            bad.append(f"{owner}.{name} is Money: its name must end in Usd")
        if "Cost" in name and not name.endswith("Usd") and name.endswith("Cost"):
            bad.append(f"{owner}.{name}: say the currency (…CostUsd)")
    assert not bad, "\n".join(bad)


def test_ids_are_named_for_their_entity_and_are_uuids() -> None:
    bad = []
    for _, owner, field in _fields():
        name, signature = field.encode_name, _signature(field.type)
        if name.endswith("Id") and name not in NOT_A_UUID_ID and signature != "uuid":
            bad.append(f"{owner}.{name} ends in Id but is {signature}")
        if signature == "uuid" and not name.endswith("Id"):
            bad.append(f"{owner}.{name} is a UUID: name it <entity>Id")
    assert not bad, "\n".join(bad)


def test_token_figures_are_integers() -> None:
    bad = [
        f"{owner}.{field.encode_name}: {_signature(field.type)}"
        for _, owner, field in _fields()
        if field.encode_name.endswith("Tokens")
        and not field.encode_name.endswith("PerMillionTokens")
        and _signature(field.type) != "int"
    ]
    assert not bad, "\n".join(bad)


def test_every_tagged_union_is_tagged_by_type() -> None:
    tags = {struct.cls.__name__: struct.tag_field for _, struct in _structs() if struct.tag_field is not None}
    assert tags, "the registry has tagged unions (stream events, action results)"
    assert set(tags.values()) == {"type"}, tags


def test_the_typescript_types_spell_each_concept_once() -> None:
    text = render_app_router(APP_REGISTRY)
    for second in ("cacheWrite5M", "cacheWrite1H", "usageEstimated", "totalCompletionTokens"):
        assert second not in text
    assert "cacheWrite5m: number;" in text
    assert "5E-8" not in text


@pytest.mark.parametrize(
    ("amount", "wire"),
    [
        (Decimal("0.00000015"), "0.00000015"),  # one gpt-4o-mini input token
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("5E-8"), "0.00000005"),
        (Decimal("0.0000100"), "0.00001"),
        (Decimal("0.003250000000000000"), "0.00325"),
        (Decimal("0E-18"), "0"),
        (Decimal("-0.00"), "0"),
        (Decimal("1E+2"), "100"),
        (Decimal("12.50"), "12.5"),
        (Decimal("-1.25"), "-1.25"),
        (Decimal("123456789012345678.123456789012345678"), "123456789012345678.123456789012345678"),
    ],
)
def test_money_has_one_spelling_on_the_wire(amount: Decimal, wire: str) -> None:
    assert format_money(amount) == wire
    assert codec.encoder().encode(Money(amount)) == f'"{wire}"'.encode()
    assert re.match(MONEY_PATTERN, wire)
    assert parse_money(wire) == amount


@pytest.mark.parametrize("text", ["1e-7", "NaN", "Infinity", "+1", " 1", "1.", ".5", "", "0x10"])
def test_an_amount_in_another_format_is_refused(text: str) -> None:
    class Budget(msgspec.Struct):
        limit_usd: Money

    with pytest.raises(msgspec.ValidationError):
        codec.decoder(Budget).decode(msgspec.json.encode({"limit_usd": text}))


def test_a_plain_decimal_cannot_reach_the_wire_as_money() -> None:
    """msgspec would write ``Decimal("1.5E-7")`` as ``"1.5E-7"``: an amount must be ``Money`` to be encoded."""
    assert msgspec.json.encode(Decimal("1.5E-7")) == b'"1.5E-7"'
    assert codec.encoder().encode(Money("1.5E-7")) == b'"0.00000015"'
    with pytest.raises(TypeError):
        msgspec.json.encode(Money("1"))  # an encoder built without the codec's hook refuses rather than guesses
