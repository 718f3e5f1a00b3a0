"""The call ledger: a model call is claimed before it is sent, and settled by the transaction that records it.

A provider bills a request as soon as it arrives, so the record of a call cannot wait for the answer: a process
killed in between would leave a billed call with no row. Before any request leaves, ``Ledger.claim`` commits a row
in ``llm_call_claims`` (who, what, a prompt estimate, a lease). The recorder's statement deletes it in the same
transaction that inserts the call's ``ai_usage_logs`` row (``RECORD_CALL``), so at every moment each request that
was sent has exactly one of the two. A claim whose lease ran out belongs to a process that died: ``Ledger.sweep``
settles it as an ``error`` of type ``Interrupted``, with usage estimated from the prompt and ``max_tokens`` (the
provider may have generated that much), priced, counted in the conversation's totals and flagged estimated.
Sweeping is safe with several processes (``FOR UPDATE SKIP LOCKED``) and idempotent (usage rows are keyed by call).

When the database is down, a call that needs no database read is claimed in the spool instead (fsync'ed, replayed
with the records); a claim that had to check something (the conversation's owner) cannot be made, and the call is
refused with ``DatabaseUnavailableError`` before anything is sent.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import msgspec

from schemas.usage import Provider
from server.budgets.admission import APPLICABLE_HARD_BUDGET, admit
from server.database import Database, NamedStatement
from server.errors import BudgetExceededError, ConversationNotFoundError
from server.llm.images import IMAGE_QUALITY_LABEL, IMAGE_SIZE_LABEL, is_image_claim
from server.llm.pricing import PriceCatalogue, PricedUsage
from server.llm.recorder import MetadataValue, UsageRecord, UsageRecorder
from server.llm.usage import TokenUsage
from server.metrics import Metrics
from server.settings import Settings

__all__ = ("Claim", "LeasePolicy", "Ledger")

logger: Final = logging.getLogger("tollbooth.ledger")

INTERRUPTED: Final = "Interrupted"
"""The ``error_type`` of a call settled by the sweeper (status ``error``: it produced no answer), usage estimated."""
BUDGETED_MAX_OUTPUT_TOKENS: Final = 4096
"""``max_tokens`` given to a call under a hard budget that sets none, so that its worst case has a bound."""
SWEEP_BATCH: Final = 100
"""Claims settled per sweeping transaction: bounds how long it holds its locks."""


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A call about to be sent, as the ledger (and, when the database is down, the spool) keeps it."""

    call_id: uuid.UUID
    user_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    """An existing conversation the call counts in; None for a new one or none."""
    procedure: str
    provider: Provider
    requested_model: str
    prompt_tokens_estimate: int
    max_output_tokens: int | None
    metadata: dict[str, MetadataValue] = msgspec.field(default_factory=dict)
    created_at: datetime.datetime
    lease_expires_at: datetime.datetime

    def usage(self, prompt_tokens: int, *, estimated: bool) -> TokenUsage:
        """``prompt_tokens`` of input and ``max_output_tokens`` of output: text, or for an image call (labelled
        ``image_size``) image tokens, which only an image call reports and which cost the image rate."""
        output = self.max_output_tokens or 0
        image = is_image_claim(self.metadata)
        return TokenUsage(
            input=prompt_tokens,
            cache_read=0,
            cache_write_5m=0,
            cache_write_1h=0,
            output=0 if image else output,
            output_image=output if image else 0,
            reasoning=0,
            prompt_tokens=prompt_tokens,
            completion_tokens=output,
            total_tokens=prompt_tokens + output,
            estimated=estimated,
        )

    def price(self, catalogue: PriceCatalogue, usage: TokenUsage) -> PricedUsage:
        """``usage`` at the rates in force when the call began: an image call's per image when its model is priced
        so, by the quality and size it labels."""
        if is_image_claim(self.metadata):
            quality, size = str(self.metadata[IMAGE_QUALITY_LABEL]), str(self.metadata[IMAGE_SIZE_LABEL])
            return catalogue.price_image(
                self.provider, self.requested_model, usage, self.created_at, quality=quality, size=size
            )
        return catalogue.price(self.provider, self.requested_model, usage, self.created_at)

    def interrupted(self, catalogue: PriceCatalogue) -> UsageRecord:
        """The record of a call whose process died: its usage estimated (the whole prompt, and ``max_output_tokens``
        when the caller set it: an image call's bound), priced at the rates in force when it began."""
        usage = self.usage(self.prompt_tokens_estimate, estimated=True)
        return UsageRecord(
            call_id=self.call_id,
            created_at=self.created_at,
            user_id=self.user_id,
            conversation_id=self.conversation_id,
            conversation_title="",
            procedure=self.procedure,
            provider=self.provider,
            requested_model=self.requested_model,
            model=self.requested_model,
            usage=usage,
            priced=self.price(catalogue, usage),
            latency_ms=0,
            status="error",
            error_type=INTERRUPTED,
            metadata=self.metadata,
        )


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    """How long a claim may stay unsettled before the sweeper takes its process for dead.

    The provider SDKs give up after ``timeout_seconds`` per attempt and ``retries`` retries, so a live process
    settles every claim within ``timeout_seconds * (retries + 1)``; ``margin_seconds`` covers the backoff between
    attempts and the recording itself. A stream renews its lease while chunks arrive.
    """

    timeout_seconds: float
    retries: int
    margin_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LeasePolicy:
        return cls(
            timeout_seconds=settings.provider_timeout_seconds,
            retries=settings.provider_max_retries,
            margin_seconds=settings.claim_lease_margin_seconds,
        )

    @property
    def call_seconds(self) -> float:
        """The longest one provider call takes, retries included."""
        return self.timeout_seconds * (self.retries + 1)

    @property
    def seconds(self) -> float:
        return self.call_seconds + self.margin_seconds


class _ClaimRow(msgspec.Struct, frozen=True, kw_only=True):
    """A claim's columns, by placeholder name (``metadata`` as JSON text)."""

    call_id: uuid.UUID
    user_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    procedure: str
    provider: str
    requested_model: str
    prompt_tokens_estimate: int
    max_output_tokens: int | None
    metadata: str
    created_at: datetime.datetime
    lease_expires_at: datetime.datetime

    @classmethod
    def of(cls, claim: Claim) -> _ClaimRow:
        return _ClaimRow(**{**msgspec.structs.asdict(claim), "metadata": msgspec.json.encode(claim.metadata).decode()})


class _ClaimParameters(_ClaimRow, frozen=True, kw_only=True):
    owner_check: uuid.UUID | None
    budget_conversation_id: uuid.UUID | None


class _ReservedClaimParameters(_ClaimRow, frozen=True, kw_only=True):
    reserved_usd: Decimal
    budget_ids: list[uuid.UUID]
    budget_period_starts: list[datetime.datetime]


_CLAIM_COLUMNS: Final = """
    call_id, user_id, conversation_id, procedure, provider, requested_model, prompt_tokens_estimate,
    max_output_tokens, metadata, created_at, lease_expires_at"""
_CLAIM_VALUES: Final = """
    :call_id, :user_id, :conversation_id, :procedure, :provider, :requested_model, :prompt_tokens_estimate,
    :max_output_tokens, :metadata::jsonb, :created_at, :lease_expires_at"""

# One round trip on the hot path: it proves the conversation is the caller's (when asked), finds whether a hard budget
# applies, and claims the call when none does. When one does, the claim is made by ``_CLAIM_RESERVED`` in a
# transaction that first reserves the worst case (``server.budgets.admission``).
CLAIM: Final = NamedStatement(
    f"""
WITH owned AS (
    SELECT :owner_check::uuid IS NULL
           OR EXISTS (SELECT 1 FROM conversations WHERE id = :owner_check AND owner = :user_id) AS ok
), budgeted AS (
    SELECT EXISTS ({APPLICABLE_HARD_BUDGET}) AS hard
), claimed AS (
    INSERT INTO llm_call_claims ({_CLAIM_COLUMNS})
    SELECT {_CLAIM_VALUES}
    FROM owned, budgeted
    WHERE owned.ok AND NOT budgeted.hard
    ON CONFLICT (call_id) DO NOTHING
    RETURNING call_id
)
SELECT owned.ok AS owned, budgeted.hard AS budgeted FROM owned, budgeted
""",
    _ClaimParameters,
)
_CLAIM_RESERVED: Final = NamedStatement(
    f"""
INSERT INTO llm_call_claims ({_CLAIM_COLUMNS}, reserved_usd, budget_ids, budget_period_starts)
VALUES ({_CLAIM_VALUES}, :reserved_usd, :budget_ids, :budget_period_starts)
""",
    _ReservedClaimParameters,
)
# A replayed claim must not resurrect a call whose record is already written (the sweeper would count it twice
# otherwise; it would not, as the usage row is keyed by call id, but it would log a false interruption).
_REPLAY_CLAIM: Final = NamedStatement(
    f"""
INSERT INTO llm_call_claims ({_CLAIM_COLUMNS})
SELECT {_CLAIM_VALUES}
WHERE NOT EXISTS (SELECT 1 FROM ai_usage_logs WHERE call_id = :call_id)
ON CONFLICT (call_id) DO NOTHING
""",
    _ClaimRow,
)
_RENEW: Final = "UPDATE llm_call_claims SET lease_expires_at = $2 WHERE call_id = $1"
_EXPIRED: Final = """
DELETE FROM llm_call_claims
WHERE call_id IN (
    SELECT call_id FROM llm_call_claims
    WHERE lease_expires_at < $1
    ORDER BY lease_expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING call_id, user_id, conversation_id, procedure, provider, requested_model, prompt_tokens_estimate,
          max_output_tokens, metadata::text AS metadata, created_at, lease_expires_at
"""
_metadata_decoder: Final = msgspec.json.Decoder(dict[str, MetadataValue])


class Ledger:
    """Claims calls before they are sent and settles the ones whose process died.

    ``claim`` raises ``ConversationNotFoundError`` when ``owner_check`` names a conversation that is not the
    caller's, and ``DatabaseUnavailableError`` when the database cannot be reached (the caller decides whether the
    call may go ahead on a spooled claim). ``sweep`` returns how many claims it settled. ``metrics`` counts the
    calls a hard budget refuses and the calls the sweeper settles.
    """

    hard_budgets_exist: bool | None = None
    """Whether any hard budget existed when the database last answered (None: not known yet). While the database is
    down a call may only run on a spooled claim when this is False: a budget cannot be checked without it."""

    def __init__(
        self,
        db: Database,
        recorder: UsageRecorder,
        catalogue: PriceCatalogue,
        lease: LeasePolicy,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self._recorder = recorder
        self._catalogue = catalogue
        self.lease = lease
        self._metrics = metrics

    async def claim(
        self,
        claim: Claim,
        *,
        owner_check: uuid.UUID | None = None,
        prompt_tokens_bound: Callable[[], int] = lambda: 0,
    ) -> Claim:
        """Commit ``claim``; with ``owner_check``, only if that conversation belongs to ``claim.user_id``.

        Under a hard budget the call's worst case (``prompt_tokens_bound()`` prompt tokens, computed only then, at
        the input rate of the tier they fall in, plus ``max_output_tokens`` at the output rate, or for an image call
        at the image-output rate, or its per-image price: ``Claim.usage``, ``Claim.price``) is reserved first, or the
        call refused with
        ``BudgetExceededError``. A call without ``max_output_tokens`` is then given ``BUDGETED_MAX_OUTPUT_TOKENS``,
        so that its worst case is bounded: the claim returned says what to send.
        """
        columns = msgspec.structs.asdict(_ClaimRow.of(claim))
        parameters = _ClaimParameters(**columns, owner_check=owner_check, budget_conversation_id=claim.conversation_id)
        row = await self.db.fetchrow(CLAIM.sql, *CLAIM.arguments(parameters))
        assert row is not None  # the statement always returns its one row
        if not row["owned"]:
            assert owner_check is not None
            raise ConversationNotFoundError(owner_check)
        if not row["budgeted"]:
            return claim
        self.hard_budgets_exist = True
        if claim.max_output_tokens is None:
            claim = msgspec.structs.replace(claim, max_output_tokens=BUDGETED_MAX_OUTPUT_TOKENS)
        worst = claim.usage(prompt_tokens_bound(), estimated=False)
        worst_case_usd = claim.price(self._catalogue, worst).total_cost
        try:
            async with self.db.transaction() as connection:
                reservation = await admit(
                    connection,
                    user_id=claim.user_id,
                    conversation_id=claim.conversation_id,
                    worst_case_usd=worst_case_usd,
                    at=claim.created_at,
                )
                reserved = _ReservedClaimParameters(
                    **{**columns, "max_output_tokens": claim.max_output_tokens},
                    reserved_usd=reservation.amount_usd,
                    budget_ids=list(reservation.budget_ids),
                    budget_period_starts=list(reservation.period_starts),
                )
                await connection.execute(_CLAIM_RESERVED.sql, *_CLAIM_RESERVED.arguments(reserved))
        except BudgetExceededError as refused:
            if self._metrics is not None:
                self._metrics.budget_rejected(refused.scope)
            raise
        return claim

    async def replay(self, claim: Claim) -> None:
        """Write a claim the spool kept while the database was down (unless its call is recorded already)."""
        await self.db.execute(_REPLAY_CLAIM.sql, *_REPLAY_CLAIM.arguments(_ClaimRow.of(claim)))

    async def refresh(self) -> bool:
        """Learn whether any hard budget exists (``hard_budgets_exist``), for when the database goes away."""
        self.hard_budgets_exist = bool(await self.db.fetchval("SELECT EXISTS (SELECT 1 FROM budgets WHERE hard)"))
        return self.hard_budgets_exist

    async def renew(self, call_id: uuid.UUID, lease_expires_at: datetime.datetime) -> None:
        """Push a live call's lease out (a long stream)."""
        await self.db.execute(_RENEW, call_id, lease_expires_at)

    async def sweep(self, now: datetime.datetime) -> int:
        """Settle every claim whose lease ended before ``now`` as an interrupted call; returns how many."""
        settled = 0
        while True:
            interrupted: list[UsageRecord] = []
            async with self.db.transaction() as connection:
                rows = await connection.fetch(_EXPIRED, now, SWEEP_BATCH)
                for row in rows:
                    claim = Claim(
                        call_id=row["call_id"],
                        user_id=row["user_id"],
                        conversation_id=row["conversation_id"],
                        procedure=row["procedure"],
                        provider=row["provider"],
                        requested_model=row["requested_model"],
                        prompt_tokens_estimate=row["prompt_tokens_estimate"],
                        max_output_tokens=row["max_output_tokens"],
                        metadata=_metadata_decoder.decode(row["metadata"]),
                        created_at=row["created_at"],
                        lease_expires_at=row["lease_expires_at"],
                    )
                    record = claim.interrupted(self._catalogue)
                    await self._recorder.write(record)
                    interrupted.append(record)
            if self._metrics is not None:  # counted once committed, as every settled call is
                for record in interrupted:
                    self._metrics.observe(record)
            settled += len(rows)
            if len(rows) < SWEEP_BATCH:
                break
        if settled:
            logger.warning(
                "ledger: settled %d call(s) of a process that died as interrupted (usage estimated)", settled
            )
        return settled
