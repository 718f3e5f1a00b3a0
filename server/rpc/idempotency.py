"""Idempotency keys, implemented once for every mutation: run a key once, replay what it answered.

A mutation call with a key (its input's ``idempotencyKey``, or the ``Idempotency-Key`` header of a single call) is
claimed before its handler runs: one committed statement of the ``IdempotencyStore`` makes the key ``running`` under
a lease, or answers what the key already holds. The handler then runs, and its answer is stored (a result, or a
business error) or the key released (a validation, auth or transient failure, so that a retry runs). A repeat then
gets, without running:

- the stored answer, byte for byte, a result marked ``fromIdempotentCache: true``, when its input is the same
  (the canonical encoding of the decoded input without the key, hashed);
- UNPROCESSABLE_CONTENT when its input differs;
- CONFLICT while the first still runs. A process killed meanwhile leaves the key running until its lease ends; the
  next call with it then runs.

Keys are scoped per user and procedure: one user's key never answers another user.

De-duplication. A mutation bound with ``@implements(..., deduplicate=True)`` gets a key even when the caller sends
none: ``dedup:`` and the hex of its request hash (``dedup_key``), kept for the de-duplication window rather than
``IDEMPOTENCY_TTL_SECONDS``. So an identical request of the same user within the window replays the first one's
result (``fromIdempotentCache``) and one still running is CONFLICT, through the same claim. Only results are kept
under such a key: after any error the key is released, so that a repeat runs (nobody asked for that error to stand).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from schemas import codec
from schemas.errors import ErrorCode
from schemas.idempotency import IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX_LENGTH
from server.rpc.errors import TRPCError

__all__ = (
    "DEDUP_KEY_PREFIX",
    "IdempotencyStore",
    "IdempotentCall",
    "KeyHeld",
    "dedup_call",
    "idempotency_key",
    "request_hash",
    "run_once",
)

logger: Final = logging.getLogger("tollbooth.rpc")

INPUT_FIELD: Final = "idempotency_key"
"""The input Struct field (``idempotencyKey`` on the wire) that carries a mutation's key."""
REPLAY_MARKER: Final = "fromIdempotentCache"
STORED_CODES: Final = frozenset(
    {ErrorCode.NOT_FOUND, ErrorCode.PAYMENT_REQUIRED, ErrorCode.CONFLICT, ErrorCode.UNPROCESSABLE_CONTENT}
)
"""Business errors: the answer to this request, whenever it is repeated. Every other error is a validation (400),
auth (401, 403), configuration (412) or transient (408, 429, 5xx) failure, after which a retry should run."""

DEDUP_KEY_PREFIX: Final = "dedup:"
_object_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_object_encoder: Final = msgspec.json.Encoder()
_TRUE: Final = msgspec.Raw(b"true")


@dataclass(frozen=True, slots=True)
class IdempotentCall:
    """One call's key in its scope (user and procedure), and the hash of its input without the key.

    ``ttl_seconds``: how long its answer is kept (None: the store's ``IDEMPOTENCY_TTL_SECONDS``); ``deduplicated``:
    the key is derived from the input (``dedup_call``), not sent by the caller; ``model_calls``: how many model calls
    the procedure may make one after another, which its lease must outlast (None: the store's default)."""

    user_id: uuid.UUID
    procedure: str
    key: str
    request_hash: bytes
    ttl_seconds: float | None = None
    deduplicated: bool = False
    model_calls: int | None = None


def dedup_call(
    user_id: uuid.UUID, procedure: str, request_hash: bytes, window_seconds: float, model_calls: int | None = None
) -> IdempotentCall:
    """The derived key of a de-duplicating mutation's call that carries no key: one per user, procedure and input."""
    return IdempotentCall(
        user_id=user_id,
        procedure=procedure,
        key=DEDUP_KEY_PREFIX + request_hash.hex(),
        request_hash=request_hash,
        ttl_seconds=window_seconds,
        deduplicated=True,
        model_calls=model_calls,
    )


@dataclass(frozen=True, slots=True)
class KeyHeld:
    """What a key already holds: the call that claimed it, running (``http_status`` None) or done."""

    request_hash: bytes
    http_status: int | None
    body: bytes | None
    """The output's JSON for a result (status 200), the whole error envelope for an error."""


class IdempotencyStore(Protocol):
    """Where keys are claimed and answers kept (``server.idempotency.IdempotencyKeys``)."""

    async def claim(self, call: IdempotentCall) -> uuid.UUID | KeyHeld:
        """In one committed statement: a claim id when the key is free (new, expired, or running past its lease),
        now running under a lease; else what it holds."""
        ...

    async def complete(self, call: IdempotentCall, claim_id: uuid.UUID, http_status: int, body: bytes) -> None:
        """Keep the answer of the claim ``claim_id`` (if it still holds the key)."""
        ...

    async def release(self, call: IdempotentCall, claim_id: uuid.UUID) -> None:
        """Free the key of the claim ``claim_id`` (if it still holds it), so that the next call runs."""
        ...

    async def replayed(self, call: IdempotentCall) -> None:
        """Count a replay (by a key the caller sent, or a de-duplicated request: ``call.deduplicated``); called only
        on the replay path."""
        ...


def idempotency_key(value: Any, header: str | None) -> str | None:
    """The call's key: its input's ``idempotencyKey``, or the ``Idempotency-Key`` header (quoted or bare); both
    at once must agree."""
    field = getattr(value, INPUT_FIELD, None)
    if header is None:
        return field if isinstance(field, str) else None
    key = header.strip()
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        key = key[1:-1]
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise TRPCError(
            ErrorCode.BAD_REQUEST,
            f"The {IDEMPOTENCY_KEY_HEADER} header must hold 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters",
        )
    if field is not None and field != key:
        raise TRPCError(
            ErrorCode.BAD_REQUEST,
            f"The {IDEMPOTENCY_KEY_HEADER} header and the input's idempotencyKey differ: send one of them",
        )
    return key


_canonical: Final = codec.encoder(order="deterministic")


def request_hash(value: Any) -> bytes:
    """SHA-256 of the decoded input without its key, encoded canonically (every field, in declaration order, absent
    ones at their defaults, the keys of a free-form object such as ``leadData`` sorted): ``{"message": "hi"}`` and
    ``{"message": "hi", "model": null}`` are the same request, and so are two objects that differ in key order only."""
    if isinstance(value, msgspec.Struct) and getattr(value, INPUT_FIELD, None) is not None:
        value = msgspec.structs.replace(value, **{INPUT_FIELD: None})
    return hashlib.sha256(_canonical.encode(value)).digest()


Outcome = tuple[int, bytes, ErrorCode | None]
"""A call's HTTP status, its body (the output's JSON for a result, the error envelope otherwise) and its error code."""


async def run_once(
    store: IdempotencyStore, call: IdempotentCall, run: Callable[[], Awaitable[Outcome]]
) -> tuple[int, bytes]:
    """``run`` the call unless its key has already run: then its stored answer (a result marked as a replay)."""
    claimed = await store.claim(call)
    if isinstance(claimed, KeyHeld):
        if call.deduplicated and claimed.request_hash != call.request_hash:
            # Only a key the caller chose to spell like a derived one gets here: nothing to de-duplicate against.
            status, body, _ = await run()
            return status, body
        replay = _replay(claimed, call)
        try:
            await store.replayed(call)
        except Exception:  # a statistic: the replay stands without it
            logger.warning("could not count a replay of an idempotency key of %s", call.procedure)
        return replay
    try:
        status, body, code = await run()
    except BaseException:  # cancelled: the call may not have finished, so a retry must be able to run
        await asyncio.shield(_release_quietly(store, call, claimed))
        raise
    try:
        if code is None or (code in STORED_CODES and not call.deduplicated):
            await store.complete(call, claimed, status, body)
        else:
            await store.release(call, claimed)
    except Exception:  # the answer stands; the key is freed by its lease
        logger.warning("could not keep the outcome of an idempotency key of %s; its lease frees it", call.procedure)
    return status, body


async def _release_quietly(store: IdempotencyStore, call: IdempotentCall, claim_id: uuid.UUID) -> None:
    try:
        await store.release(call, claim_id)
    except Exception:
        logger.warning("could not release an idempotency key of %s; its lease frees it", call.procedure)


def _replay(held: KeyHeld, call: IdempotentCall) -> tuple[int, bytes]:
    if held.request_hash != call.request_hash:
        raise TRPCError(
            ErrorCode.UNPROCESSABLE_CONTENT,
            f"This idempotencyKey was used with another input for {call.procedure}: use a new key for a new request",
        )
    if held.http_status is None or held.body is None:
        raise TRPCError(
            ErrorCode.CONFLICT,
            f"A {call.procedure} call with this idempotencyKey is still running: retry once it has finished",
        )
    if held.http_status != 200:
        return held.http_status, held.body
    return 200, marked_as_replay(held.body)


def marked_as_replay(output: bytes) -> bytes:
    """The stored output's JSON object with ``fromIdempotentCache`` true, every other byte as stored."""
    fields = _object_decoder.decode(output)
    fields[REPLAY_MARKER] = _TRUE
    return _object_encoder.encode(fields)
