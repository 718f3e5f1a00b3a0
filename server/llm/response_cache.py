"""The response cache: a call that asks for it (or a procedure that declares it) is answered once, then replayed.

The key is a SHA-256 over a versioned canonical envelope: ``KEY_VERSION``, the caller's user id (an answer is never
shared across users), the procedure, the provider, the resolved model, the structured answer's schema version and the
whole normalised request (every message, history included; system prompt; max tokens; temperature; response schema).
Any field that can change the answer changes the key. Only complete, valid answers are stored (``LLMCore`` decides:
status ``ok``, usage reported rather than estimated, a structured answer that validated).

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
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

import msgspec

from schemas.usage import Provider
from server.database import Database
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
    "ResponseCache",
    "cache_label",
    "policy_for",
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


PROCEDURE_DEFAULTS: Final[Mapping[str, CachePolicy]] = MappingProxyType({})
"""Procedures that cache unless a call says otherwise (DESIGN: ``personas.generate``, once it exists)."""


CACHE_LABEL: Final = "cache"
"""The metadata label of a usage row whose provider call a cache lookup made: ``miss`` (``use`` found no entry) or
``refresh``. A hit is a row of its own (status ``cache_hit``); a call without a cache policy has no label."""


def cache_label(policy: CachePolicy) -> Literal["miss", "refresh"]:
    """The ``CACHE_LABEL`` of the provider call made under ``policy`` (never ``bypass``: it makes no lookup)."""
    return "miss" if policy.mode == "use" else "refresh"


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


_canonical: Final = msgspec.json.Encoder(order="sorted")


class CachedAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A stored answer: its text, and what the call that produced it was and consumed."""

    reply: str
    usage: TokenUsage
    provider: Provider
    requested_model: str
    model: str
    service_tier: str | None
    call_id: uuid.UUID
    created_at: datetime.datetime


_usage_decoder: Final = msgspec.json.Decoder(TokenUsage)
_GET: Final = """
SELECT reply, usage::text AS usage, provider, requested_model, model, service_tier, call_id, created_at
FROM response_cache WHERE cache_key = $1 AND expires_at > $2
"""
_PUT: Final = """
INSERT INTO response_cache (
    cache_key, user_id, procedure, provider, requested_model, model, service_tier, reply, usage, call_id, created_at,
    expires_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)
ON CONFLICT (cache_key) DO UPDATE SET
    provider = excluded.provider, requested_model = excluded.requested_model, model = excluded.model,
    service_tier = excluded.service_tier, reply = excluded.reply, usage = excluded.usage, call_id = excluded.call_id,
    created_at = excluded.created_at, expires_at = excluded.expires_at
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

    def in_flight(self, key: bytes) -> asyncio.Event | None:
        """The miss of ``key`` under way in this process, if any: wait for it, then read the entry."""
        return self._flights.get(key)

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
        )

    async def prune(self, *, now: datetime.datetime | None = None) -> int:
        """Delete the entries past their time; returns how many."""
        return await self._db.delete_in_batches(_PRUNE, now or datetime.datetime.now(datetime.UTC), batch=PRUNE_BATCH)
