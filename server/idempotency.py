"""Idempotency keys in PostgreSQL: the ``IdempotencyStore`` that ``server.rpc.idempotency`` runs mutations with.

A key is one row of ``idempotency_keys``, keyed by user, procedure and key. ``claim`` is one committed statement:
it inserts the row (running: no ``http_status``, a lease), or takes over one that is free again (kept past
``expires_at``, or running past ``lease_expires_at``: its process died), or else returns the row as it is. Every
claim carries a fresh ``claim_id``, and ``complete`` and ``release`` touch the row only while it still holds theirs,
so a call that outlived its lease cannot overwrite the call that took its key over.

The lease is the ledger's (``LeasePolicy``) stretched to the model calls one mutation may make: a structured answer
asked again is a second call (a procedure that makes more, one after another, says how many: ``IdempotentCall.
model_calls``). A completed key is kept ``ttl_seconds`` from its completion (a de-duplication key, its call's window);
``prune`` deletes the rows past it (the app does every ``PRUNE_INTERVAL_SECONDS``).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Final

import msgspec

from server.database import Database, NamedStatement
from server.llm.ledger import LeasePolicy
from server.metrics import Metrics
from server.rpc.idempotency import IdempotentCall, KeyHeld

__all__ = ("MODEL_CALLS_PER_MUTATION", "PRUNE_INTERVAL_SECONDS", "IdempotencyKeys")

MODEL_CALLS_PER_MUTATION: Final = 2
"""The most model calls one mutation makes (``chat.executeAction`` and ``chat.summarizeEmail`` ask an invalid
structured answer again once)."""
PRUNE_INTERVAL_SECONDS: Final = 300.0
PRUNE_BATCH: Final = 10_000
"""Rows deleted per pruning statement: bounds how long it holds its locks."""


class _ClaimParameters(msgspec.Struct, frozen=True, kw_only=True):
    user_id: uuid.UUID
    procedure: str
    key: str
    request_hash: bytes
    claim_id: uuid.UUID
    now: datetime.datetime
    lease_expires_at: datetime.datetime
    expires_at: datetime.datetime


_TAKEN_OVER: Final = "(k.expires_at <= :now OR (k.http_status IS NULL AND k.lease_expires_at <= :now))"
_RENEWED: Final = {
    "request_hash": "EXCLUDED.request_hash",
    "claim_id": "EXCLUDED.claim_id",
    "http_status": "NULL",
    "response": "NULL",
    "created_at": "EXCLUDED.created_at",
    "lease_expires_at": "EXCLUDED.lease_expires_at",
    "expires_at": "EXCLUDED.expires_at",
}
_SET_IF_TAKEN_OVER: Final = ", ".join(
    f"{column} = CASE WHEN {_TAKEN_OVER} THEN {new} ELSE k.{column} END" for column, new in _RENEWED.items()
)
# Always one row back, even when a concurrent claim of the same key commits first: the conflicting row is updated
# (to itself unless it is free again), and RETURNING shows its latest version. A plain DO NOTHING could not be followed
# by a read in the same statement, whose snapshot predates the concurrent insert.
CLAIM: Final = NamedStatement(
    f"""
INSERT INTO idempotency_keys AS k
    (user_id, procedure, idempotency_key, request_hash, claim_id, created_at, lease_expires_at, expires_at)
VALUES (:user_id, :procedure, :key, :request_hash, :claim_id, :now, :lease_expires_at, :expires_at)
ON CONFLICT (user_id, procedure, idempotency_key) DO UPDATE SET
    {_SET_IF_TAKEN_OVER}
RETURNING claim_id, request_hash, http_status, response
""",
    _ClaimParameters,
)
_COMPLETE: Final = """
UPDATE idempotency_keys SET http_status = $5, response = $6, expires_at = $7
WHERE user_id = $1 AND procedure = $2 AND idempotency_key = $3 AND claim_id = $4
"""
_RELEASE: Final = """
DELETE FROM idempotency_keys WHERE user_id = $1 AND procedure = $2 AND idempotency_key = $3 AND claim_id = $4
"""
_REPLAYED: Final = """
INSERT INTO idempotent_replay_counts AS c (day, procedure, replays) VALUES ($1, $2, 1)
ON CONFLICT (day, procedure) DO UPDATE SET replays = c.replays + 1
"""
_DEDUPLICATED: Final = """
INSERT INTO idempotent_replay_counts AS c (day, procedure, replays, deduplicated) VALUES ($1, $2, 0, 1)
ON CONFLICT (day, procedure) DO UPDATE SET deduplicated = c.deduplicated + 1
"""
_PRUNE: Final = """
DELETE FROM idempotency_keys
WHERE ctid = ANY (ARRAY(SELECT ctid FROM idempotency_keys WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))
"""


class IdempotencyKeys:
    """The keys of every user and procedure; ``ttl_seconds`` is ``IDEMPOTENCY_TTL_SECONDS``.

    Every method raises ``DatabaseUnavailableError`` when the database cannot be reached: a call with a key is then
    refused (SERVICE_UNAVAILABLE) rather than run without the guarantee it asked for.
    """

    def __init__(self, db: Database, *, ttl_seconds: float, lease: LeasePolicy, metrics: Metrics | None = None) -> None:
        self._db = db
        self._metrics = metrics
        self._ttl = datetime.timedelta(seconds=ttl_seconds)
        self._lease_policy = lease
        self._lease = self._lease_of(MODEL_CALLS_PER_MUTATION)

    def _lease_of(self, model_calls: int) -> datetime.timedelta:
        lease = self._lease_policy
        return datetime.timedelta(seconds=model_calls * lease.call_seconds + lease.margin_seconds)

    def _ttl_of(self, call: IdempotentCall) -> datetime.timedelta:
        """How long ``call``'s answer is kept: ``ttl_seconds``, or its own TTL (a de-duplication window, the life of
        the signed URLs it carries) when shorter."""
        return self._ttl if call.ttl_seconds is None else min(self._ttl, datetime.timedelta(seconds=call.ttl_seconds))

    async def claim(self, call: IdempotentCall, *, now: datetime.datetime | None = None) -> uuid.UUID | KeyHeld:
        now = now or datetime.datetime.now(datetime.UTC)
        claim_id = uuid.uuid4()
        lease = self._lease if call.model_calls is None else self._lease_of(call.model_calls)
        lease_expires_at = now + lease
        parameters = _ClaimParameters(
            user_id=call.user_id,
            procedure=call.procedure,
            key=call.key,
            request_hash=call.request_hash,
            claim_id=claim_id,
            now=now,
            lease_expires_at=lease_expires_at,
            expires_at=max(now + self._ttl_of(call), lease_expires_at),
        )
        row = await self._db.fetchrow(CLAIM.sql, *CLAIM.arguments(parameters))
        assert row is not None  # an insert or an update: always one row
        if row["claim_id"] == claim_id:
            return claim_id
        return KeyHeld(request_hash=bytes(row["request_hash"]), http_status=row["http_status"], body=row["response"])

    async def complete(
        self,
        call: IdempotentCall,
        claim_id: uuid.UUID,
        http_status: int,
        body: bytes,
        *,
        now: datetime.datetime | None = None,
    ) -> None:
        now = now or datetime.datetime.now(datetime.UTC)
        await self._db.execute(
            _COMPLETE, call.user_id, call.procedure, call.key, claim_id, http_status, body, now + self._ttl_of(call)
        )

    async def release(self, call: IdempotentCall, claim_id: uuid.UUID) -> None:
        await self._db.execute(_RELEASE, call.user_id, call.procedure, call.key, claim_id)

    async def replayed(self, call: IdempotentCall, *, now: datetime.datetime | None = None) -> None:
        """Count one replay in ``idempotent_replay_counts`` (per UTC day and procedure; kept after the key is pruned):
        in ``replays`` for a key the caller sent, in ``deduplicated`` for a de-duplicated request.

        One statement on the replay path only: a call without a key, or one that runs, never reaches it."""
        if self._metrics is not None:
            self._metrics.idempotent_replayed(call.procedure)
        now = now or datetime.datetime.now(datetime.UTC)
        statement = _DEDUPLICATED if call.deduplicated else _REPLAYED
        await self._db.execute(statement, now.astimezone(datetime.UTC).date(), call.procedure)

    async def prune(self, *, now: datetime.datetime | None = None) -> int:
        """Delete the keys kept past their time; returns how many."""
        return await self._db.delete_in_batches(_PRUNE, now or datetime.datetime.now(datetime.UTC), batch=PRUNE_BATCH)
