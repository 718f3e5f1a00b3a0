"""The response cache: a call that asks for it (or a procedure that declares it) is answered once, then replayed.

The key is a SHA-256 over a versioned canonical envelope: ``KEY_VERSION``, the caller's user id (an answer is never
shared across users), the procedure, the provider, the resolved model, the structured answer's schema version and the
whole normalised request (every message, history included; system prompt; max tokens; temperature; response schema).
Any field that can change the answer changes the key. Only complete, valid answers are stored (``LLMCore`` decides:
status ``ok``, usage reported rather than estimated, a structured answer that validated).

A persona set (``personas.generate``) is one entry too: its key (``set_key``) covers the whole normalised input of
the procedure beside the text request, its ``reply`` is the set, and ``calls`` holds the pictures' calls besides the
text call, so that a hit prices what the whole set saved.

Single flight. Identical misses in flight at once in one process make one provider call: the first registers the
key (an ``asyncio.Event``), the others wait for it and read the entry it stored. Across processes there is no lock:
an advisory lock would pin a pooled connection for the length of a provider call (seconds), and a claim row would
add a round trip to every miss and a lease to sweep; with N processes, at most N identical misses pay, once.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

import msgspec

from schemas.cache import CacheOptions
from schemas.usage import Provider
from server.database import Database
from server.errors import DatabaseUnavailableError
from server.llm.providers import CompletionRequest
from server.llm.recorder import MetadataValue
from server.llm.usage import TokenUsage

__all__ = (
    "CACHE_LABEL",
    "DEFAULT_TTL_SECONDS",
    "KEY_VERSION",
    "PROCEDURE_DEFAULTS",
    "PRUNE_INTERVAL_SECONDS",
    "CacheMode",
    "CachePolicy",
    "CachedAnswer",
    "CachedCall",
    "ResponseCache",
    "cache_label",
    "policy_for",
    "requested_policy",
)

CacheMode = Literal["use", "refresh", "bypass"]
KEY_VERSION: Final = 1
"""Bump when the envelope or the meaning of a stored answer changes: every older entry then misses."""
DEFAULT_TTL_SECONDS: Final = 86_400
PRUNE_INTERVAL_SECONDS: Final = 300.0
PRUNE_BATCH: Final = 10_000


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """``use``: answer from the cache when it can, else call and store; ``refresh``: call and replace the entry;
    ``bypass``: neither read nor write."""

    mode: CacheMode
    ttl_seconds: int = DEFAULT_TTL_SECONDS


PROCEDURE_DEFAULTS: Final[Mapping[str, CachePolicy]] = MappingProxyType({"personas.generate": CachePolicy(mode="use")})
"""Procedures that cache unless a call says otherwise (DESIGN: ``personas.generate``)."""


CACHE_LABEL: Final = "cache"
"""The metadata label of a usage row whose provider call a cache lookup made: ``miss`` (``use`` found no entry) or
``refresh``. A hit is a row of its own (status ``cache_hit``); a call without a cache policy has no label."""


def cache_label(policy: CachePolicy) -> Literal["miss", "refresh"]:
    """The ``CACHE_LABEL`` of the provider call made under ``policy`` (never ``bypass``: it makes no lookup)."""
    return "miss" if policy.mode == "use" else "refresh"


def requested_policy(options: CacheOptions | None) -> CachePolicy | None:
    """The policy a call's ``cache`` input asks for (None: it asks for none)."""
    if options is None:
        return None
    return CachePolicy(mode=options.mode, ttl_seconds=options.ttl_seconds or DEFAULT_TTL_SECONDS)


def policy_for(procedure: str, requested: CachePolicy | None) -> CachePolicy | None:
    """The call's own policy, else its procedure's declared default, else None (no cache, no extra round trip)."""
    return requested if requested is not None else PROCEDURE_DEFAULTS.get(procedure)


class _Envelope(msgspec.Struct, frozen=True, array_like=True):
    version: int
    user_id: uuid.UUID
    procedure: str
    provider: str
    model: str
    schema_version: MetadataValue
    request: CompletionRequest


class _SetEnvelope(msgspec.Struct, frozen=True, array_like=True):
    """The envelope of an answer made of several calls: the text request and the rest of the procedure's input."""

    version: int
    user_id: uuid.UUID
    procedure: str
    provider: str
    model: str
    schema_version: MetadataValue
    request: CompletionRequest
    rest: Mapping[str, Any]


_canonical: Final = msgspec.json.Encoder(order="sorted")


class CachedCall(msgspec.Struct, frozen=True, kw_only=True):
    """One more call a stored answer needed besides its main one (a persona set's picture): what it consumed, and
    for a picture its size and quality as sent (per-image prices depend on them)."""

    kind: Literal["text", "image"]
    provider: Provider
    requested_model: str
    model: str
    usage: TokenUsage
    service_tier: str | None = None
    call_id: uuid.UUID
    image_size: str | None = None
    image_quality: str | None = None


class CachedAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A stored answer: its text, what the call that produced it was and consumed, and the other calls it needed."""

    reply: str
    usage: TokenUsage
    provider: Provider
    requested_model: str
    model: str
    service_tier: str | None
    call_id: uuid.UUID
    created_at: datetime.datetime
    calls: tuple[CachedCall, ...] = ()


_usage_decoder: Final = msgspec.json.Decoder(TokenUsage)
_calls_decoder: Final = msgspec.json.Decoder(tuple[CachedCall, ...])
_GET: Final = """
SELECT reply, usage::text AS usage, provider, requested_model, model, service_tier, call_id, created_at,
       calls::text AS calls
FROM response_cache WHERE cache_key = $1 AND expires_at > $2
"""
_PUT: Final = """
INSERT INTO response_cache (
    cache_key, user_id, procedure, provider, requested_model, model, service_tier, reply, usage, call_id, created_at,
    expires_at, calls
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13::jsonb)
ON CONFLICT (cache_key) DO UPDATE SET
    provider = excluded.provider, requested_model = excluded.requested_model, model = excluded.model,
    service_tier = excluded.service_tier, reply = excluded.reply, usage = excluded.usage, call_id = excluded.call_id,
    created_at = excluded.created_at, expires_at = excluded.expires_at, calls = excluded.calls
"""
_PRUNE: Final = """
DELETE FROM response_cache
WHERE ctid = ANY (ARRAY(SELECT ctid FROM response_cache WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))
"""


class ResponseCache:
    """The ``response_cache`` table, and the misses in flight in this process."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._flights: dict[bytes, asyncio.Event] = {}

    @staticmethod
    def key(
        *,
        user_id: uuid.UUID,
        procedure: str,
        provider: Provider,
        request: CompletionRequest,
        schema_version: MetadataValue,
    ) -> bytes:
        envelope = _Envelope(
            version=KEY_VERSION,
            user_id=user_id,
            procedure=procedure,
            provider=provider,
            model=request.model,
            schema_version=schema_version,
            request=request,
        )
        return hashlib.sha256(_canonical.encode(envelope)).digest()

    @staticmethod
    def set_key(
        *,
        user_id: uuid.UUID,
        procedure: str,
        provider: Provider,
        request: CompletionRequest,
        schema_version: MetadataValue,
        rest: Mapping[str, Any],
    ) -> bytes:
        """``key`` of an answer made of several calls: the text ``request`` and ``rest``, the rest of the
        procedure's normalised input (JSON values; objects are encoded with sorted keys)."""
        envelope = _SetEnvelope(
            version=KEY_VERSION,
            user_id=user_id,
            procedure=procedure,
            provider=provider,
            model=request.model,
            schema_version=schema_version,
            request=request,
            rest=rest,
        )
        return hashlib.sha256(_canonical.encode(envelope)).digest()

    def in_flight(self, key: bytes) -> asyncio.Event | None:
        """The miss of ``key`` under way in this process, if any: wait for it, then read the entry."""
        return self._flights.get(key)

    async def lookup(self, key: bytes, clock: Callable[[], datetime.datetime]) -> CachedAnswer | None:
        """The live entry of ``key``, once any identical miss in flight in this process has landed; None is a miss
        that no one in this process is filling: ``lead`` it. A database that does not answer is a miss too (the
        caller's own database needs decide whether it may run without it)."""
        while True:
            flight = self.in_flight(key)
            if flight is not None:
                await flight.wait()
            try:
                answer = await self.get(key, clock())
            except DatabaseUnavailableError:
                answer = None
            if answer is not None or self.in_flight(key) is None:
                return answer

    def lead(self, key: bytes) -> asyncio.Event:
        """Register this caller's miss of ``key``: identical misses wait for it (``land`` when done, always)."""
        flight = self._flights[key] = asyncio.Event()
        return flight

    def land(self, key: bytes, flight: asyncio.Event) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.set()

    async def get(self, key: bytes, now: datetime.datetime) -> CachedAnswer | None:
        row = await self._db.fetchrow(_GET, key, now)
        if row is None:
            return None
        return CachedAnswer(
            reply=row["reply"],
            usage=_usage_decoder.decode(row["usage"]),
            provider=row["provider"],
            requested_model=row["requested_model"],
            model=row["model"],
            service_tier=row["service_tier"],
            call_id=row["call_id"],
            created_at=row["created_at"],
            calls=_calls_decoder.decode(row["calls"]),
        )

    async def put(
        self,
        key: bytes,
        *,
        user_id: uuid.UUID,
        procedure: str,
        answer: CachedAnswer,
        ttl_seconds: int,
    ) -> None:
        """Store (or replace) the entry of ``key``, kept ``ttl_seconds`` from the answer's time."""
        await self._db.execute(
            _PUT,
            key,
            user_id,
            procedure,
            answer.provider,
            answer.requested_model,
            answer.model,
            answer.service_tier,
            answer.reply,
            msgspec.json.encode(answer.usage).decode(),
            answer.call_id,
            answer.created_at,
            answer.created_at + datetime.timedelta(seconds=ttl_seconds),
            msgspec.json.encode(answer.calls).decode(),
        )

    async def prune(self, *, now: datetime.datetime | None = None) -> int:
        """Delete the entries past their time; returns how many."""
        return await self._db.delete_in_batches(_PRUNE, now or datetime.datetime.now(datetime.UTC), batch=PRUNE_BATCH)
