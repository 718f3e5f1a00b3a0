"""``personas.generate``'s logic: one structured text call for the set, then one picture per persona, stored.

Every model call goes through ``LLMCore`` (the text call through ``ask_structured``, as ``chat.executeAction`` asks:
an invalid answer is asked again once, both attempts costed), so each leaves its own usage row labelled
``personas.generate`` (metadata ``task``: ``personas`` or ``persona_image``). The whole set is one entry of the
response cache (``ResponseCache.set_key``: the user, the text request with its model and schema, and the rest of the
normalised input: config, picture model and settings, whether pictures were asked for, the e-mail's SHA-256), stored
only when every call succeeded; a hit is one ``cache_hit`` usage row whose ``saved_usd`` prices every original call
at today's rates, and answers with the stored pictures' keys turned into URLs again (no model or storage call).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import msgspec

from schemas.money import Money
from schemas.personas import (
    MAX_PERSONAS,
    GeneratePersonasInput,
    GeneratePersonasOutput,
    Persona,
    PersonaCallReport,
    PersonaCostReport,
)
from schemas.usage import group_cost
from server.chat.service import wire_usage
from server.errors import LLMError, TollboothError
from server.llm.core import Attribution, LLMCore, LLMResult
from server.llm.images import IMAGE_QUALITY_LABEL, IMAGE_SIZE_LABEL, ImageRequest, image_provider_for_model
from server.llm.providers import ChatTurn, CompletionRequest
from server.llm.recorder import UsageRecord
from server.llm.response_cache import (
    CACHE_LABEL,
    CachedAnswer,
    CachedCall,
    CachePolicy,
    cache_label,
    policy_for,
    requested_policy,
)
from server.llm.routing import provider_for_model
from server.llm.structured import ask_structured, object_schema
from server.media import MediaStore

__all__ = ("PROCEDURE", "SEQUENTIAL_MODEL_CALLS", "PersonaService")

logger: Final = logging.getLogger("tollbooth.personas")

PROCEDURE: Final = "personas.generate"
SCHEMA_VERSION: Final = 1
"""Bump when the persona schema or the prompts change meaning: every cached set then misses."""
SEQUENTIAL_MODEL_CALLS: Final = 2 + MAX_PERSONAS
"""At most two text calls, then at worst (a concurrency of 1) one picture after another: an idempotency lease must
outlast them."""
MAX_TOKENS_BASE: Final = 200
MAX_TOKENS_PER_PERSONA: Final = 450
"""The text call's ``max_tokens``: a persona's JSON is about 200 tokens; the rest is room, never billed unless used."""

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2_000)]
_Items = Annotated[list[Annotated[str, msgspec.Meta(max_length=500)]], msgspec.Meta(max_length=10)]


class _Draft(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One persona as the model writes it."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    job_title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    age: Annotated[int, msgspec.Meta(ge=16, le=100)]
    description: _Text
    goals: _Items
    pain_points: _Items
    appearance: Annotated[
        str, msgspec.Meta(min_length=1, max_length=500, description="How they look, in one sentence, for a portrait.")
    ]


class _Drafts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    personas: Annotated[list[_Draft], msgspec.Meta(min_length=1, max_length=MAX_PERSONAS)]


_BASE_SCHEMA: Final = object_schema(_Drafts)
_DRAFTS_DECODER: Final = msgspec.json.Decoder(_Drafts)
_lead_encoder: Final = msgspec.json.Encoder(order="sorted")


class _StoredPersona(msgspec.Struct, frozen=True, kw_only=True):
    persona_id: uuid.UUID
    draft: _Draft
    image_key: str | None


class _StoredSet(msgspec.Struct, frozen=True, kw_only=True):
    """A persona set as the response cache keeps it: picture keys, not URLs (a presigned URL expires)."""

    personas: list[_StoredPersona]
    image_model: str | None


_PICTURE: Final = ImageRequest(model="", prompt="")
"""Every picture's size and quality (``ImageRequest``'s defaults: 1024x1024, ``auto``); part of the cache key."""
_set_encoder: Final = msgspec.json.Encoder()
_set_decoder: Final = msgspec.json.Decoder(_StoredSet)


@dataclass(slots=True)
class _Made:
    """What one request made: the text calls' results, the pictures' records and keys, and where its time went."""

    text: list[LLMResult]
    drafts: list[_Draft]
    persona_ids: list[uuid.UUID]
    pictures: bool
    """Pictures were asked for."""
    image_records: list[UsageRecord | None] = field(default_factory=list)
    image_keys: list[str | None] = field(default_factory=list)
    image_urls: list[str | None] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every call answered and was recorded with the provider's own usage: a set fit to be cached."""
        text = self.text[-1]
        pictures_made = not self.pictures or (
            all(key is not None for key in self.image_keys)
            and all(record is not None and record.status == "ok" for record in self.image_records)
        )
        return text.recorded and not text.usage.estimated and pictures_made


@dataclass(slots=True)
class PersonaService:
    """``personas.generate`` over ``LLMCore``. ``default_model`` answers calls that name no text model,
    ``image_model`` those that name no picture model. Errors: ``LLMError`` for a text call that fails or answers
    invalid JSON twice (after recording them); a picture that fails only leaves its persona without one."""

    llm: LLMCore
    media: MediaStore
    default_model: str
    image_model: str
    image_concurrency: int

    async def generate(self, user_id: uuid.UUID, data: GeneratePersonasInput) -> GeneratePersonasOutput:
        started = time.perf_counter()
        model = data.model or self.default_model
        image_model = (data.image_model or self.image_model) if data.with_images else None
        if image_model is not None:
            image_provider_for_model(image_model)  # not a picture model: BAD_REQUEST before anything is spent
        n = data.config.num_personas
        system, content = _prompt(data)
        request = CompletionRequest(
            model=model,
            messages=(ChatTurn(role="user", content=content),),
            system=system,
            max_tokens=MAX_TOKENS_BASE + MAX_TOKENS_PER_PERSONA * n,
            json_schema=_schema_for(n),
            json_schema_name="personas",
        )
        policy = policy_for(PROCEDURE, requested_policy(data.cache))
        key = self._key(user_id, request, data, image_model) if policy is not None and policy.mode != "bypass" else None
        if key is None or policy is None:
            made = await self._make(user_id, request, n, image_model, data.config.image_style, labels={})
            output = _output(made, model, image_model)
            _log_summary(made, output, started, cache="bypass" if policy is not None else "none")
            return output
        cache = self.llm.cache
        if policy.mode == "use":
            answer = await cache.lookup(key, self.llm.now)
            if answer is not None:
                return await self._from_cache(user_id, answer, model, started)
        flight = cache.lead(key)
        try:
            made = await self._make(
                user_id, request, n, image_model, data.config.image_style, labels={CACHE_LABEL: cache_label(policy)}
            )
            output = _output(made, model, image_model)
            if made.complete:
                await self._keep(key, user_id, made, model, image_model, policy)
            _log_summary(made, output, started, cache=cache_label(policy))
            return output
        finally:
            cache.land(key, flight)

    def _key(
        self, user_id: uuid.UUID, request: CompletionRequest, data: GeneratePersonasInput, image_model: str | None
    ) -> bytes | None:
        try:
            provider = provider_for_model(request.model)
        except LLMError:  # the text call refuses it, logged as any call with this model is; nothing to cache
            return None
        email = data.lead_email.strip().lower() if data.lead_email is not None else None
        rest = {
            "config": msgspec.to_builtins(data.config),
            "withImages": data.with_images,
            "imageModel": image_model,
            "imageSize": _PICTURE.size,
            "imageQuality": _PICTURE.quality,
            "emailSha256": None if email is None else hashlib.sha256(email.encode()).hexdigest(),
        }
        return self.llm.cache.set_key(
            user_id=user_id,
            procedure=PROCEDURE,
            provider=provider,
            request=request,
            schema_version=SCHEMA_VERSION,
            rest=rest,
        )

    async def _make(
        self,
        user_id: uuid.UUID,
        request: CompletionRequest,
        n: int,
        image_model: str | None,
        image_style: str | None,
        *,
        labels: dict[str, Any],
    ) -> _Made:
        """The text call (asked again once if invalid), then the pictures; every call recorded as it ends."""
        text_started = time.perf_counter()
        assert request.system is not None
        results, drafts = await ask_structured(
            self.llm,
            user_id,
            procedure=PROCEDURE,
            conversation_id=None,
            model=request.model,
            system=request.system,
            content=request.messages[0].content,
            schema=request.json_schema or {},
            schema_name=request.json_schema_name,
            decoder=_DRAFTS_DECODER,
            metadata={"task": "personas", "personas": n, "schema_version": SCHEMA_VERSION},
            check=lambda answer: _count_problem(answer, n),
            max_tokens=request.max_tokens,
            first_labels=labels,
        )
        made = _Made(
            text=results,
            drafts=drafts.personas,
            persona_ids=[uuid.uuid4() for _ in drafts.personas],
            pictures=image_model is not None,
        )
        made.timings_ms["text"] = (time.perf_counter() - text_started) * 1000
        made.timings_ms["text_provider"] = float(sum(result.record.latency_ms for result in results))
        made.image_records = [None] * len(made.drafts)
        made.image_keys = [None] * len(made.drafts)
        made.image_urls = [None] * len(made.drafts)
        if image_model is not None:
            await self._pictures(user_id, made, image_model, image_style)
        return made

    async def _pictures(self, user_id: uuid.UUID, made: _Made, image_model: str, image_style: str | None) -> None:
        """One picture per persona, ``image_concurrency`` at a time, each stored as soon as it is made.

        A picture whose call fails leaves its persona without one (its ``error`` row is reported). A storage failure
        fails the request, once every picture under way has ended (each is recorded and paid for; the store writes
        an object once, so a retry stores nothing twice)."""
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.image_concurrency)
        spent = {"image_calls": 0.0, "image_provider": 0.0, "storage": 0.0}

        async def picture(index: int) -> None:
            draft = made.drafts[index]
            request = msgspec.structs.replace(_PICTURE, model=image_model, prompt=_image_prompt(draft, image_style))
            attribution = Attribution(
                user_id=user_id,
                procedure=PROCEDURE,
                metadata={"task": "persona_image", "persona": index + 1, "schema_version": SCHEMA_VERSION},
            )
            async with gate:
                called = time.perf_counter()
                try:
                    result = await self.llm.generate_image(request, attribution)
                except LLMError as error:  # recorded by the core: this persona goes without a picture
                    made.image_records[index] = error.record if isinstance(error.record, UsageRecord) else None
                    logger.debug("persona %d of %d: picture failed (%s)", index + 1, len(made.drafts), error.error_type)
                    return
                except TollboothError as error:  # not sent (a budget, the database): no picture, no row
                    logger.info("persona %d: picture not made (%s)", index + 1, type(error).__name__)
                    return
                stored_at = time.perf_counter()
                made.image_records[index] = result.record
                spent["image_calls"] += (stored_at - called) * 1000
                spent["image_provider"] += result.record.latency_ms
                stored = await self.media.put(result.image, content_type=result.content_type)
                spent["storage"] += (time.perf_counter() - stored_at) * 1000
            made.image_keys[index] = stored.key
            made.image_urls[index] = stored.url
            logger.debug(
                "persona %d of %d: picture %s (%d bytes, %s, cost %s USD)",
                index + 1,
                len(made.drafts),
                stored.key,
                stored.size_bytes,
                "stored" if stored.created else "already stored",
                result.record.priced.total_cost,
            )

        outcomes = await asyncio.gather(*(picture(i) for i in range(len(made.drafts))), return_exceptions=True)
        made.timings_ms["images"] = (time.perf_counter() - started) * 1000
        made.timings_ms.update({f"{name}_sum": value for name, value in spent.items()})
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _keep(
        self,
        key: bytes,
        user_id: uuid.UUID,
        made: _Made,
        model: str,
        image_model: str | None,
        policy: CachePolicy,
    ) -> None:
        """Store a complete set: the valid text call as the entry's main call, every other call in ``calls``."""
        answer = made.text[-1]
        stored = _StoredSet(
            personas=[
                _StoredPersona(persona_id=persona_id, draft=draft, image_key=image_key)
                for persona_id, draft, image_key in zip(made.persona_ids, made.drafts, made.image_keys, strict=True)
            ],
            image_model=image_model,
        )
        others = [_cached_call("text", result.record, result.service_tier) for result in made.text[:-1]]
        others += [_cached_call("image", record, None) for record in made.image_records if record is not None]
        entry = CachedAnswer(
            reply=_set_encoder.encode(stored).decode(),
            usage=answer.usage,
            provider=answer.provider,
            requested_model=model,
            model=answer.model,
            service_tier=answer.service_tier,
            call_id=answer.call_id,
            created_at=self.llm.now(),
            calls=tuple(others),
        )
        try:
            await self.llm.cache.put(
                key, user_id=user_id, procedure=PROCEDURE, answer=entry, ttl_seconds=policy.ttl_seconds
            )
        except Exception as error:  # the caller has its set; the next identical call pays again
            logger.warning("persona set not cached (%s)", type(error).__name__)

    async def _from_cache(
        self, user_id: uuid.UUID, answer: CachedAnswer, model: str, started: float
    ) -> GeneratePersonasOutput:
        stored = _set_decoder.decode(answer.reply)
        attribution = Attribution(
            user_id=user_id,
            procedure=PROCEDURE,
            metadata={"task": "personas", "personas": len(stored.personas), "schema_version": SCHEMA_VERSION},
        )
        hit = await self.llm.record_cache_hit(attribution, answer, requested_model=model)
        personas = [_persona(item.persona_id, item.draft, await self._url(item.image_key)) for item in stored.personas]
        report = _report("text", hit.record)
        output = GeneratePersonasOutput(
            personas=personas,
            model=answer.model,
            image_model=stored.image_model,
            cost=_cost([report], []),
            from_cache=True,
            cache_age_seconds=hit.cache_age_seconds,
            saved_usd=None if hit.record.saved_usd is None else Money(hit.record.saved_usd),
        )
        logger.info(
            "personas.generate from the cache: %d personas, saved %s USD, %.1f ms",
            len(personas),
            output.saved_usd,
            (time.perf_counter() - started) * 1000,
        )
        return output

    async def _url(self, key: str | None) -> str | None:
        """A stored picture's URL, made afresh (a presigned one expires): no storage call."""
        return None if key is None else await self.media.url_for(key)


def _prompt(data: GeneratePersonasInput) -> tuple[str, str]:
    """The text call's system prompt and message: the lead data as canonical JSON (sorted keys), so that the same
    object sent in another key order is the same request."""
    config = data.config
    style = [
        f"Write in this style: {config.writing_style}." if config.writing_style else "",
        f"They work in {config.industry}." if config.industry else "",
    ]
    system = (
        f"You create marketing personas: fictional, realistic people who could be the buyers or users behind the lead "
        f"described in the JSON the user gives you. Create exactly {config.num_personas} distinct personas. For each "
        "give a full name, job title, age, a description of two to four sentences, two to four goals and two to four "
        "pain points, and their appearance in one sentence for a portrait. Never include contact details. "
        + " ".join(part for part in style if part)
    ).strip()
    content = "Lead data (JSON):\n" + _lead_encoder.encode(data.lead_data).decode()
    return system, content


def _image_prompt(draft: _Draft, image_style: str | None) -> str:
    style = image_style or "a natural, professional portrait photograph"
    return (
        f"A portrait of {draft.name}, {draft.age}, {draft.job_title}. {draft.appearance} Style: {style}. "
        "No text, no logos."
    )


def _schema_for(n: int) -> dict[str, Any]:
    """The persona set's JSON Schema, asking for exactly ``n`` personas."""
    schema = copy.deepcopy(_BASE_SCHEMA)
    schema["properties"]["personas"]["minItems"] = n
    schema["properties"]["personas"]["maxItems"] = n
    return schema


def _count_problem(answer: _Drafts, n: int) -> str | None:
    got = len(answer.personas)
    return None if got == n else f"expected exactly {n} personas, got {got}"


def _persona(persona_id: uuid.UUID, draft: _Draft, image_url: str | None) -> Persona:
    return Persona(
        persona_id=persona_id,
        name=draft.name,
        job_title=draft.job_title,
        age=draft.age,
        description=draft.description,
        goals=draft.goals,
        pain_points=draft.pain_points,
        appearance=draft.appearance,
        image_url=image_url,
    )


def _cached_call(kind: Literal["text", "image"], record: UsageRecord, service_tier: str | None) -> CachedCall:
    size, quality = record.metadata.get(IMAGE_SIZE_LABEL), record.metadata.get(IMAGE_QUALITY_LABEL)
    return CachedCall(
        kind=kind,
        provider=record.provider,
        requested_model=record.requested_model,
        model=record.model,
        usage=record.usage,
        service_tier=service_tier,
        call_id=record.call_id,
        image_size=size if isinstance(size, str) else None,
        image_quality=quality if isinstance(quality, str) else None,
    )


def _report(
    kind: Literal["text", "image"], record: UsageRecord, persona_id: uuid.UUID | None = None
) -> PersonaCallReport:
    cost = record.priced.total_cost
    return PersonaCallReport(
        call_id=record.call_id,
        purpose=kind,
        persona_id=persona_id,
        model=record.model,
        provider=record.provider,
        status=record.status,
        error_type=record.error_type,
        usage=wire_usage([record.usage]),
        cost_usd=None if cost is None else Money(cost),
        pricing_status=record.priced.status,
    )


def _cost(text: Sequence[PersonaCallReport], images: Sequence[PersonaCallReport]) -> PersonaCostReport:
    reports = [*text, *images]
    unpriced = sum(1 for report in reports if report.pricing_status == "unpriced")
    total = sum((report.cost_usd for report in reports if report.cost_usd is not None), Decimal(0))
    return PersonaCostReport(
        text_calls=list(text),
        image_calls=list(images),
        total_cost_usd=group_cost(Money(total), len(reports), unpriced),
        llm_calls=len(reports),
        unpriced_calls=unpriced,
    )


def _output(made: _Made, model: str, image_model: str | None) -> GeneratePersonasOutput:
    text = [_report("text", result.record) for result in made.text]
    images = [
        _report("image", record, persona_id)
        for record, persona_id in zip(made.image_records, made.persona_ids, strict=True)
        if record is not None
    ]
    return GeneratePersonasOutput(
        personas=[
            _persona(persona_id, draft, url)
            for persona_id, draft, url in zip(made.persona_ids, made.drafts, made.image_urls, strict=True)
        ],
        model=made.text[-1].model,
        image_model=image_model,
        cost=_cost(text, images),
    )


def _log_summary(made: _Made, output: GeneratePersonasOutput, started: float, *, cache: str) -> None:
    pictures = sum(1 for url in made.image_urls if url is not None)
    failed = sum(1 for record in made.image_records if record is not None and record.status != "ok")
    timings = " ".join(f"{name}={value:.1f}ms" for name, value in made.timings_ms.items())
    logger.info(
        "personas.generate: %d personas, %d pictures (%d failed), %d model calls, cost %s USD, cache %s, %.1f ms (%s)",
        len(output.personas),
        pictures,
        failed,
        output.cost.llm_calls,
        output.cost.total_cost_usd,
        cache,
        (time.perf_counter() - started) * 1000,
        timings,
    )
