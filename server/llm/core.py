"""``invoke_llm``: the one way a procedure calls a model, whole (``invoke``) or streamed (``stream``), or generates an
image (``generate_image``, ``server.llm.images``).

Route by model name, claim the call in the ledger (``server.llm.ledger``: committed before the request leaves, so a
process killed mid-call still leaves a row), call the provider through its official SDK, normalise the usage, price
it at the rates in force at call time, and record reply, usage row and conversation totals in one transaction that
also settles the claim. A failed provider call is recorded too (status ``error``), and so is a caller that went away
(``cancelled``); every failure is logged once, by kind, never by content. A database failure after the provider
answered never fails the caller's request: the record goes to the spool and is replayed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

import msgspec

from schemas.usage import ConversationTotals
from server.conversations import ensure_owned
from server.errors import DatabaseUnavailableError, LLMError, LLMFailure
from server.llm.images import (
    IMAGE_QUALITY_LABEL,
    IMAGE_SIZE_LABEL,
    GeneratedImage,
    ImageRequest,
    estimated_image_usage,
    image_adapter,
    image_output_tokens_bound,
    image_provider_for_model,
    sent_quality,
)
from server.llm.ledger import Claim, Ledger
from server.llm.pricing import FREE, PriceCatalogue, PricedUsage
from server.llm.providers import (
    Completion,
    CompletionRequest,
    ProviderAdapter,
    ProviderName,
    ProviderSet,
    StreamEnd,
    TextDelta,
)
from server.llm.recorder import CallStatus, MetadataValue, StoredMessage, UsageRecord, UsageRecorder
from server.llm.response_cache import (
    CACHE_LABEL,
    CachedAnswer,
    CachedCall,
    CachePolicy,
    ResponseCache,
    cache_label,
)
from server.llm.routing import provider_for_model
from server.llm.spool import UsageSpool
from server.llm.usage import NO_USAGE, TokenUsage, estimate_usage
from server.metrics import Metrics

__all__ = ("Attribution", "ImageRequest", "ImageResult", "LLMCore", "LLMResult")

logger = logging.getLogger("tollbooth.llm")

DATABASE_WRITE_TIMEOUT: Final = 5.0
_CACHE_HIT: Final = msgspec.structs.replace(FREE, source="response cache")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who and what a call is for. ``metadata`` describes the task; it never holds message content.

    With ``new_conversation`` the conversation ``conversation_id`` is created, titled ``conversation_title``, by the
    call's record; a failed call then creates nothing. With ``check_owner`` the call is refused
    (``ConversationNotFoundError``) unless ``conversation_id`` belongs to ``user_id``; the check rides on the claim.
    """

    user_id: uuid.UUID
    procedure: str
    conversation_id: uuid.UUID | None = None
    new_conversation: bool = False
    conversation_title: str = ""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    check_owner: bool = False


@dataclass(frozen=True, slots=True)
class LLMResult:
    """A call's reply, what was recorded of it, and the conversation's totals after it."""

    text: str
    record: UsageRecord
    totals: ConversationTotals | None
    """None outside a conversation, or when the record was spooled."""
    recorded: bool
    """False when the database write failed and the record waits in the spool."""
    service_tier: str | None = None
    """The provider's service tier for the call (priced differently: batch, flex, priority), as it reported it."""
    cache_age_seconds: float | None = None
    """How old the cached answer was, for a call the response cache answered (``record.status == "cache_hit"``)."""

    @property
    def from_cache(self) -> bool:
        return self.record.status == "cache_hit"

    @property
    def call_id(self) -> uuid.UUID:
        return self.record.call_id

    @property
    def provider(self) -> ProviderName:
        return self.record.provider

    @property
    def model(self) -> str:
        return self.record.model

    @property
    def usage(self) -> TokenUsage:
        return self.record.usage

    @property
    def priced(self) -> PricedUsage:
        return self.record.priced

    @property
    def message_id(self) -> uuid.UUID | None:
        return self.record.message_id


@dataclass(frozen=True, slots=True)
class ImageResult:
    """A generated image, decoded, and the usage row written for its call (status, cost, call id)."""

    image: bytes
    content_type: str
    """``image/png``."""
    record: UsageRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class _CallBase:
    """One provider call under way: what its usage record needs besides the outcome."""

    call_id: uuid.UUID
    provider: ProviderName
    attribution: Attribution
    started_at: datetime.datetime
    started: float
    claim_spooled: bool = False
    """The claim waits in the spool (the database was down): the record supersedes it."""

    def latency_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call(_CallBase):
    request: CompletionRequest

    @property
    def requested_model(self) -> str:
        return self.request.model

    def estimate(self, completion_chars: int) -> TokenUsage:
        """The usage of a call that ended without the provider's report; the provider may bill it all the same."""
        return estimate_usage(_prompt_chars(self.request), completion_chars)

    def price(self, catalogue: PriceCatalogue, usage: TokenUsage) -> PricedUsage:
        return catalogue.price(self.provider, self.request.model, usage, self.started_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class _ImageCall(_CallBase):
    request: ImageRequest

    @property
    def requested_model(self) -> str:
        return self.request.model

    def estimate(self) -> TokenUsage:
        """The usage of an image call that ended without the provider's report (the caller left, the answer was
        broken): the prompt, and the image at its bound, at the image rate; the provider may bill it all the same."""
        return estimated_image_usage(self.request)

    def price(self, catalogue: PriceCatalogue, usage: TokenUsage) -> PricedUsage:
        quality, size = sent_quality(self.request), self.request.size
        return catalogue.price_image(
            self.provider, self.request.model, usage, self.started_at, quality=quality, size=size
        )


def _prompt_chars(request: CompletionRequest) -> int:
    return sum(len(turn.content) for turn in request.messages) + len(request.system_prompt() or "")


_TOKENS_PER_MESSAGE: Final = 8
"""Framing tokens a provider adds per message (role markers, separators): a generous bound (3 to 4 is typical)."""


def prompt_tokens_bound(request: CompletionRequest) -> int:
    """At most how many tokens the prompt can count: a token is never shorter than a UTF-8 byte (byte-level BPE),
    plus each message's framing. A budget reserves this, so the call's actual cost cannot exceed what it reserved."""
    texts = [turn.content for turn in request.messages] + [request.system_prompt() or ""]
    return sum(len(text.encode()) for text in texts) + _TOKENS_PER_MESSAGE * (len(texts) + 1)


class LLMCore:
    """``invoke_llm``: every model call of the service, whole (``invoke``) or streamed (``stream``).

    Built once per process (``build_services``) from the provider adapters, the price catalogue, the recorder and the
    spool. Each call is routed by model name (``provider_for_model``), sent through the provider's official SDK, its
    usage normalised into disjoint token buckets (``TokenUsage``), priced in ``Decimal`` USD at the rates in force
    when the call started (``PriceCatalogue.price``), and recorded by ``UsageRecorder.write``: the usage row, the
    conversation's totals and any messages in one transaction. When that write fails (the database is down, or does
    not answer within ``DATABASE_WRITE_TIMEOUT`` seconds) the record goes to the spool, fsync'ed, and the caller still
    gets its answer with ``LLMResult.recorded`` false; the service replays the spool later, idempotently by call id.

    Errors: ``LLMError`` (``server.errors``) for any failure of the model call, raised after the failure is recorded;
    ``LLMFailure.UNKNOWN_MODEL`` / ``NOT_CONFIGURED`` before anything is sent. Each is logged once, as a WARNING naming
    procedure, provider, model, failure and error type, never content. ``metrics`` counts every settled call
    (``Metrics.observe``; None counts nothing). ``clock`` (UTC) is for tests.
    """

    def __init__(
        self,
        providers: ProviderSet,
        catalogue: PriceCatalogue,
        recorder: UsageRecorder,
        spool: UsageSpool,
        ledger: Ledger,
        *,
        cache: ResponseCache | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self.providers = providers
        self.catalogue = catalogue
        self.recorder = recorder
        self.spool = spool
        self.ledger = ledger
        self.cache = cache or ResponseCache(ledger.db)
        self.metrics = metrics or Metrics(spool_dir=spool.directory, enabled=False)
        self._clock = clock

    def now(self) -> datetime.datetime:
        """The core's clock (UTC): when calls start, and when cache entries are made and read."""
        return self._clock()

    async def sweep(self) -> int:
        """Settle the claims of dead processes (``Ledger.sweep``) as of now, and learn whether hard budgets exist
        (``Ledger.refresh``); returns how many claims were settled."""
        await self.ledger.refresh()
        return await self.ledger.sweep(self._clock())

    async def replay_spool(self) -> int:
        """Write what the spool kept while the database was down: claims first, then records (which settle them)."""
        return await self.spool.replay(self.recorder.write, self.ledger.replay)

    async def invoke(
        self,
        request: CompletionRequest,
        attribution: Attribution,
        *,
        store: Sequence[tuple[Literal["user", "system"], str]] = (),
        store_reply: bool = False,
        annotate: Callable[[str], Mapping[str, MetadataValue]] | None = None,
        cache: CachePolicy | None = None,
    ) -> LLMResult:
        """Call the model and record the call. ``store`` are messages to keep with the reply (``store_reply``).

        ``annotate`` sees the reply before it is recorded and returns labels to add to the record's metadata (whether
        a structured answer was valid, the intent it found): labels, never content.
        ``cache`` (``server.llm.response_cache``): ``use`` answers from the response cache when it holds this
        request's answer (a ``cache_hit`` record, no claim, no provider call), else calls once for every identical
        miss in flight and stores a complete, valid answer; ``refresh`` calls and replaces the entry; ``bypass`` and
        None touch no cache (None costs no database round trip).
        Raises ``LLMError`` for a provider failure, after recording it; before anything is sent,
        ``ConversationNotFoundError`` (``attribution.check_owner``) and ``DatabaseUnavailableError`` (a claim that
        needed the database could not be made).
        """
        if cache is not None and cache.mode != "bypass":
            return await self._invoke_cached(request, attribution, cache, store, store_reply, annotate)
        call, adapter = await self._start(request, attribution)
        # Every failure is recorded shielded: a caller that leaves while the record is written must not abort it.
        try:
            completion = await adapter.complete(call.request)
        except LLMError as error:
            usage = call.estimate(0) if error.billable else NO_USAGE
            await asyncio.shield(self._record_failure(call, error, usage))
            raise
        except asyncio.CancelledError as cancelled:
            # The caller went away mid-call: the provider may still bill the prompt, so keep an estimate.
            await asyncio.shield(self._record_failure(call, cancelled, call.estimate(0)))
            raise
        except Exception as error:
            # A failure no adapter translated (an SDK error we do not know): recorded, then reported as a 500.
            await asyncio.shield(self._record_failure(call, error, NO_USAGE))
            raise
        metadata = dict(attribution.metadata)
        if annotate is not None:
            metadata.update(annotate(completion.text))
        # The provider has answered and will bill: a caller that leaves now must not abort the record.
        return await asyncio.shield(self._record_success(call, completion, metadata, store, store_reply))

    async def _invoke_cached(
        self,
        request: CompletionRequest,
        attribution: Attribution,
        policy: CachePolicy,
        store: Sequence[tuple[Literal["user", "system"], str]],
        store_reply: bool,
        annotate: Callable[[str], Mapping[str, MetadataValue]] | None,
    ) -> LLMResult:
        try:
            provider = provider_for_model(request.model)
        except LLMError:  # refused, logged and raised as any call with this model is
            return await self.invoke(request, attribution, store=store, store_reply=store_reply, annotate=annotate)
        key = self.cache.key(
            user_id=attribution.user_id,
            procedure=attribution.procedure,
            provider=provider,
            request=request,
            schema_version=attribution.metadata.get("schema_version"),
        )
        if policy.mode == "use":
            answer = await self.cache.lookup(key, self._clock)
            if answer is not None:
                return await self.record_cache_hit(
                    attribution,
                    answer,
                    requested_model=request.model,
                    store=store,
                    store_reply=store_reply,
                    annotate=annotate,
                )
        flight = self.cache.lead(key)
        # Label the provider call a lookup made (``admin.cacheStats`` counts misses by it; hits are ``cache_hit`` rows).
        labelled = dataclasses.replace(attribution, metadata={**attribution.metadata, CACHE_LABEL: cache_label(policy)})
        try:
            result = await self.invoke(request, labelled, store=store, store_reply=store_reply, annotate=annotate)
            if (
                result.recorded
                and not result.usage.estimated
                and result.record.metadata.get("output_valid") is not False
            ):
                answer = CachedAnswer(
                    reply=result.text,
                    usage=result.usage,
                    provider=result.provider,
                    requested_model=request.model,
                    model=result.model,
                    service_tier=result.service_tier,
                    call_id=result.call_id,
                    created_at=self._clock(),
                )
                try:
                    await self.cache.put(
                        key,
                        user_id=attribution.user_id,
                        procedure=attribution.procedure,
                        answer=answer,
                        ttl_seconds=policy.ttl_seconds,
                    )
                except Exception as error:  # the caller has its answer; the next identical call pays again
                    logger.warning("response cache entry not stored (%s)", type(error).__name__)
            return result
        finally:
            self.cache.land(key, flight)

    async def record_cache_hit(
        self,
        attribution: Attribution,
        answer: CachedAnswer,
        *,
        requested_model: str,
        store: Sequence[tuple[Literal["user", "system"], str]] = (),
        store_reply: bool = False,
        annotate: Callable[[str], Mapping[str, MetadataValue]] | None = None,
    ) -> LLMResult:
        """Record a call the cache answered: its own usage row (``cache_hit``, cost 0, what it saved at today's
        rates, the answering call) with the messages and totals, in one transaction; no claim, no provider call.

        What it saved is every call the answer needed (``answer.calls`` besides the main one: a persona set's
        pictures) priced today; None when none of them has a known price."""
        started, now = time.perf_counter(), self._clock()
        if attribution.check_owner and attribution.conversation_id is not None:
            await ensure_owned(self.ledger.db, attribution.conversation_id, attribution.user_id)
        metadata = dict(attribution.metadata)
        if annotate is not None:
            metadata.update(annotate(answer.reply))
        completion = Completion(text=answer.reply, usage=NO_USAGE, model=answer.model)
        record = UsageRecord(
            call_id=uuid.uuid4(),
            created_at=now,
            user_id=attribution.user_id,
            conversation_id=attribution.conversation_id,
            conversation_title=storable(attribution.conversation_title),
            procedure=attribution.procedure,
            provider=answer.provider,
            requested_model=requested_model,
            model=answer.model,
            usage=NO_USAGE,
            priced=_CACHE_HIT,
            latency_ms=round((time.perf_counter() - started) * 1000),
            status="cache_hit",
            metadata=metadata,
            messages=_messages(store, completion if store_reply else None, now, self._clock()),
            saved_usd=self._saved(answer, now),
            cached_call_id=answer.call_id,
        )
        totals, recorded = await self._write(record)
        age = max((now - answer.created_at).total_seconds(), 0.0)
        return LLMResult(text=answer.reply, record=record, totals=totals, recorded=recorded, cache_age_seconds=age)

    def _saved(self, answer: CachedAnswer, now: datetime.datetime) -> Decimal | None:
        """What ``answer``'s calls would cost at ``now``'s rates: the priced ones summed, None if none is priced."""
        main = self.catalogue.price(
            answer.provider, answer.model, answer.usage, now, service_tier=answer.service_tier
        ).total_cost
        costs = [main, *(self._price_cached_call(call, now) for call in answer.calls)]
        known = [cost for cost in costs if cost is not None]
        return sum(known, Decimal(0)) if known else None

    def _price_cached_call(self, call: CachedCall, now: datetime.datetime) -> Decimal | None:
        if call.kind == "image":  # as ``generate_image`` priced it: per image, or by its tokens
            return self.catalogue.price_image(
                call.provider,
                call.requested_model,
                call.usage,
                now,
                quality=call.image_quality or "auto",
                size=call.image_size or "auto",
            ).total_cost
        return self.catalogue.price(
            call.provider, call.model, call.usage, now, service_tier=call.service_tier
        ).total_cost

    async def stream(
        self,
        request: CompletionRequest,
        attribution: Attribution,
        *,
        store: Sequence[tuple[Literal["user", "system"], str]] = (),
        store_reply: bool = False,
    ) -> AsyncGenerator[TextDelta | LLMResult, None]:
        """Call the model streaming: its text deltas as they arrive, then the recorded ``LLMResult``.

        Recorded once, like ``invoke``, when the stream completes. A call the provider refuses is recorded as
        ``invoke`` records it. A stream that breaks before the provider reported usage is recorded with status
        ``error`` and usage estimated from the prompt and the text received; ``LLMError`` is raised after either.
        A consumer that stops early (closes the iterator, or is cancelled) leaves a ``cancelled`` record with such
        an estimate. A broken or abandoned stream stores no message and creates no conversation: the provider bills
        it, so its usage counts in the totals, but a conversation never holds half an answer. Close the iterator
        (``contextlib.aclosing``) rather than drop it, so that the record is written at once. A stream that lasts
        renews its claim's lease as chunks arrive. Raises before anything is sent as ``invoke`` does.
        """
        call, adapter = await self._start(request, attribution)
        received: list[str] = []
        end: StreamEnd | None = None
        renew_at = time.monotonic() + self.ledger.lease.seconds / 2
        # Every outcome is recorded shielded: a consumer that leaves while the record is written must not abort it.
        try:
            async with contextlib.aclosing(adapter.stream(call.request)) as chunks:
                async for chunk in chunks:
                    if isinstance(chunk, StreamEnd):
                        end = chunk
                    else:
                        received.append(chunk.text)
                        if time.monotonic() >= renew_at:
                            renew_at = time.monotonic() + self.ledger.lease.seconds / 2
                            await self._renew(call)
                        yield chunk
            if end is None:
                message = f"{call.provider}'s stream ended without a usage report"
                raise LLMError(LLMFailure.BAD_RESPONSE, message, error_type="MissingUsage", billable=True)
        except LLMError as error:
            usage = call.estimate(sum(map(len, received))) if error.billable else NO_USAGE
            await asyncio.shield(self._record_failure(call, error, usage))
            raise
        except (asyncio.CancelledError, GeneratorExit) as cancelled:
            estimate = call.estimate(sum(map(len, received)))
            await asyncio.shield(self._record_failure(call, cancelled, estimate))
            raise
        except Exception as error:
            # A failure no adapter translated (a bug, an error an SDK let through): text had arrived, so it is billed.
            usage = call.estimate(sum(map(len, received))) if received else NO_USAGE
            await asyncio.shield(self._record_failure(call, error, usage))
            raise
        completion = Completion(text="".join(received), usage=end.usage, model=end.model, service_tier=end.service_tier)
        yield await asyncio.shield(
            self._record_success(call, completion, dict(attribution.metadata), store, store_reply)
        )

    async def _start(self, request: CompletionRequest, attribution: Attribution) -> tuple[_Call, ProviderAdapter]:
        """Route the call and claim it: nothing is sent before the claim is committed (or spooled)."""
        provider: ProviderName | None = None
        try:
            provider = provider_for_model(request.model)
            adapter = self.providers.adapter(provider)
        except LLMError as error:  # nothing was sent, so nothing is recorded; the operator still hears of it
            _log_failure(attribution.procedure, provider, request.model, error)
            raise
        call_id, started_at = uuid.uuid4(), self._clock()
        max_tokens, claim_spooled = await self._claim(
            call_id,
            started_at,
            provider,
            request.model,
            attribution,
            prompt_tokens_estimate=estimate_usage(_prompt_chars(request), 0).input,
            max_output_tokens=request.max_tokens,
            prompt_tokens_bound=lambda: prompt_tokens_bound(request),
        )
        if max_tokens != request.max_tokens:  # a hard budget bounds the call's worst case
            request = msgspec.structs.replace(request, max_tokens=max_tokens)
        call = _Call(
            call_id=call_id,
            provider=provider,
            request=request,
            attribution=attribution,
            started_at=started_at,
            started=time.perf_counter(),
            claim_spooled=claim_spooled,
        )
        return call, adapter

    async def _claim(
        self,
        call_id: uuid.UUID,
        started_at: datetime.datetime,
        provider: ProviderName,
        model: str,
        attribution: Attribution,
        *,
        prompt_tokens_estimate: int,
        max_output_tokens: int | None,
        prompt_tokens_bound: Callable[[], int],
    ) -> tuple[int | None, bool]:
        """Claim a call before it is sent (``Ledger.claim``: the owner check, a hard budget's admission), or spool the
        claim when the database is down and nothing needed checking. Returns the ``max_output_tokens`` to send (a
        hard budget bounds it) and whether the claim was spooled."""
        owner_check = attribution.conversation_id if attribution.check_owner else None
        if not self.recorder.enabled:  # no usage rows, so no claims to settle; the owner is still checked
            if owner_check is not None:
                await ensure_owned(self.ledger.db, owner_check, attribution.user_id)
            return max_output_tokens, False
        claim = Claim(
            call_id=call_id,
            user_id=attribution.user_id,
            conversation_id=None if attribution.new_conversation else attribution.conversation_id,
            procedure=attribution.procedure,
            provider=provider,
            requested_model=model,
            prompt_tokens_estimate=prompt_tokens_estimate,
            max_output_tokens=max_output_tokens,
            metadata=dict(attribution.metadata),
            created_at=started_at,
            lease_expires_at=started_at + datetime.timedelta(seconds=self.ledger.lease.seconds),
        )
        try:
            claimed = await self.ledger.claim(claim, owner_check=owner_check, prompt_tokens_bound=prompt_tokens_bound)
        except DatabaseUnavailableError:
            if owner_check is not None or self.ledger.hard_budgets_exist is not False:
                raise  # the caller's right to the conversation, or a budget, cannot be checked: nothing is sent
            await asyncio.to_thread(self.spool.put_claim, claim)
            return max_output_tokens, True
        return claimed.max_output_tokens, False

    async def generate_image(self, request: ImageRequest, attribution: Attribution) -> ImageResult:
        """Generate one image (``server.llm.images``) and record the call: one usage row, labelled
        ``attribution.procedure``, with the image's size and quality in its metadata.

        The call goes as ``invoke``'s does: claimed in the ledger before it is sent (a hard budget reserves the prompt
        and the image's worst case: ``image_output_tokens_bound`` at the image rate, or the model's per-image price),
        priced from the tokens the API reports (image tokens at the image-output rate; a report without the
        text/image split is priced all at the image rate and flagged estimated) or per image by quality and size,
        and recorded in one transaction that settles the claim (spooled when the database is down). It stores no
        message; it counts in ``attribution.conversation_id``'s totals only when one is given.
        Raises ``LLMError`` for a provider failure, after recording an ``error`` row (``UNKNOWN_MODEL`` for a model
        that is not an image model, ``NOT_CONFIGURED`` without an OpenAI key: before anything is sent), and before
        anything is sent ``ConversationNotFoundError``, ``BudgetExceededError`` and ``DatabaseUnavailableError`` as
        ``invoke`` does.
        """
        provider: ProviderName | None = None
        try:
            provider = image_provider_for_model(request.model)
            adapter = image_adapter(self.providers, provider)
        except LLMError as error:  # nothing was sent, so nothing is recorded; the operator still hears of it
            _log_failure(attribution.procedure, provider, request.model, error)
            raise
        labels = {IMAGE_SIZE_LABEL: request.size, IMAGE_QUALITY_LABEL: sent_quality(request)}
        attribution = dataclasses.replace(attribution, metadata={**attribution.metadata, **labels})
        call_id, started_at = uuid.uuid4(), self._clock()
        _, claim_spooled = await self._claim(
            call_id,
            started_at,
            provider,
            request.model,
            attribution,
            prompt_tokens_estimate=estimate_usage(len(request.prompt), 0).input,
            max_output_tokens=image_output_tokens_bound(request),
            prompt_tokens_bound=lambda: len(request.prompt.encode()) + _TOKENS_PER_MESSAGE,
        )
        call = _ImageCall(
            call_id=call_id,
            provider=provider,
            request=request,
            attribution=attribution,
            started_at=started_at,
            started=time.perf_counter(),
            claim_spooled=claim_spooled,
        )
        # Every failure is recorded shielded, as in ``invoke``.
        try:
            generated = await adapter.generate(request)
        except LLMError as error:
            await asyncio.shield(self._record_failure(call, error, call.estimate() if error.billable else NO_USAGE))
            raise
        except asyncio.CancelledError as cancelled:
            # The caller went away mid-call: the provider goes on generating, and bills, the image.
            await asyncio.shield(self._record_failure(call, cancelled, call.estimate()))
            raise
        except Exception as error:
            await asyncio.shield(self._record_failure(call, error, NO_USAGE))
            raise
        return await asyncio.shield(self._record_image(call, generated))

    async def _record_image(self, call: _ImageCall, generated: GeneratedImage) -> ImageResult:
        attribution = call.attribution
        record = UsageRecord(
            call_id=call.call_id,
            created_at=call.started_at,
            user_id=attribution.user_id,
            conversation_id=attribution.conversation_id,
            conversation_title=storable(attribution.conversation_title),
            procedure=attribution.procedure,
            provider=call.provider,
            requested_model=call.request.model,
            model=generated.model,
            usage=generated.usage,
            priced=call.price(self.catalogue, generated.usage),
            latency_ms=call.latency_ms(),
            status="ok",
            metadata=dict(attribution.metadata),
        )
        await self._persist(call, record)
        return ImageResult(image=generated.image, content_type=generated.content_type, record=record)

    async def _renew(self, call: _Call) -> None:
        """Push a long stream's lease out; a failure only logs (the record will settle the claim all the same)."""
        if call.claim_spooled or not self.recorder.enabled:
            return
        try:
            await self.ledger.renew(call.call_id, self._clock() + datetime.timedelta(seconds=self.ledger.lease.seconds))
        except Exception as error:
            logger.warning("could not renew the lease of call %s (%s)", call.call_id, type(error).__name__)

    async def _record_success(
        self,
        call: _Call,
        completion: Completion,
        metadata: dict[str, MetadataValue],
        store: Sequence[tuple[Literal["user", "system"], str]],
        store_reply: bool,
    ) -> LLMResult:
        latency_ms = call.latency_ms()
        started_at, attribution = call.started_at, call.attribution
        priced = self.catalogue.price(
            call.provider, completion.model, completion.usage, started_at, service_tier=completion.service_tier
        )
        messages = _messages(store, completion if store_reply else None, started_at, self._clock())
        record = UsageRecord(
            call_id=call.call_id,
            created_at=started_at,
            user_id=attribution.user_id,
            conversation_id=attribution.conversation_id,
            conversation_title=storable(attribution.conversation_title),
            procedure=attribution.procedure,
            provider=call.provider,
            requested_model=call.request.model,
            model=completion.model,
            usage=completion.usage,
            priced=priced,
            latency_ms=latency_ms,
            status="ok",
            metadata=metadata,
            messages=messages,
        )
        totals, recorded = await self._persist(call, record)
        return LLMResult(
            text=completion.text,
            record=record,
            totals=totals,
            recorded=recorded,
            service_tier=completion.service_tier,
        )

    async def _record_failure(self, call: _Call | _ImageCall, error: BaseException, usage: TokenUsage) -> None:
        """Record and log a call that produced no answer, ``error`` being why: every failure after routing passes
        here. No messages are stored and no conversation is created."""
        attribution, model = call.attribution, call.requested_model
        status, _, error_type = _classified(error)
        _log_failure(attribution.procedure, call.provider, model, error, call.call_id)
        record = UsageRecord(
            call_id=call.call_id,
            created_at=call.started_at,
            user_id=attribution.user_id,
            conversation_id=None if attribution.new_conversation else attribution.conversation_id,
            conversation_title="",
            procedure=attribution.procedure,
            provider=call.provider,
            requested_model=model,
            model=model,
            usage=usage,
            # No tokens cost nothing, priced or not: counting them as unpriced would inflate `unpricedCalls`.
            priced=FREE if usage == NO_USAGE else call.price(self.catalogue, usage),
            latency_ms=call.latency_ms(),
            status=status,
            error_type=error_type,
            metadata=dict(attribution.metadata),
        )
        if isinstance(error, LLMError):
            error.record = record
        await self._persist(call, record)

    async def _persist(self, call: _CallBase, record: UsageRecord) -> tuple[ConversationTotals | None, bool]:
        totals, recorded = await self._write(record)
        if call.claim_spooled:  # the record (written, or spooled itself) supersedes the spooled claim
            await asyncio.to_thread(self.spool.discard_claim, call.call_id)
        return totals, recorded

    async def _write(self, record: UsageRecord) -> tuple[ConversationTotals | None, bool]:
        """Write ``record``, or spool it when the database fails: the record is never lost."""
        try:
            async with asyncio.timeout(DATABASE_WRITE_TIMEOUT):
                totals, recorded = await self.recorder.write(record), True
        except Exception as error:
            if not isinstance(error, DatabaseUnavailableError):  # an outage is logged once, by the database
                # Name the failure only: a database error's text may quote the values it refused (message content).
                logger.error(
                    "usage record %s could not be written (%s %s); spooling it for replay",
                    record.call_id,
                    type(error).__name__,
                    getattr(error, "sqlstate", "") or "",
                )
            await asyncio.to_thread(self.spool.put, record)
            totals, recorded = None, False
        self.metrics.observe(record)  # the one point where every call's record is settled (written or spooled)
        return totals, recorded


def _classified(error: BaseException) -> tuple[CallStatus, str, str]:
    """A failed call's status, its failure (the ``LLMFailure`` that decides the caller's tRPC code) and error type."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled", "CANCELLED", "Cancelled"
    if isinstance(error, LLMError):
        return "error", error.failure.value, error.error_type
    # No adapter translated it: the caller gets INTERNAL_SERVER_ERROR and the transport logs the traceback.
    return "error", "UNTRANSLATED", type(error).__name__


def _log_failure(
    procedure: str,
    provider: ProviderName | None,
    model: str,
    error: BaseException,
    call_id: uuid.UUID | None = None,
) -> None:
    """Log a failed call once, by kind: WARNING, or INFO for a caller that went away (no fault of the service).

    Never the error's text: a provider may quote the request in it, and the log carries no content and no keys.
    """
    status, failure, error_type = _classified(error)
    logger.log(
        logging.INFO if status == "cancelled" else logging.WARNING,
        "model call %s: procedure=%s provider=%s model=%r failure=%s error_type=%s call=%s",
        "cancelled (the caller went away)" if status == "cancelled" else "failed",
        procedure,
        provider or "-",
        model,
        failure,
        error_type,
        call_id or "-",
    )


def _messages(
    store: Sequence[tuple[Literal["user", "system"], str]],
    completion: Completion | None,
    started_at: datetime.datetime,
    finished_at: datetime.datetime,
) -> tuple[StoredMessage, ...]:
    stored = [
        StoredMessage(id=uuid.uuid4(), role=role, content=storable(content), created_at=started_at)
        for role, content in store
    ]
    if completion is not None:
        # The reply is stamped after the prompt even on a coarse clock, so history reads back in order.
        reply_at = max(finished_at, started_at + datetime.timedelta(microseconds=1))
        reply = storable(completion.text)
        stored.append(StoredMessage(id=uuid.uuid4(), role="assistant", content=reply, created_at=reply_at))
    return tuple(stored)


def storable(text: str) -> str:
    """``text`` as PostgreSQL can store it: it refuses NUL in text, and the record (and its cost) must not be lost."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
