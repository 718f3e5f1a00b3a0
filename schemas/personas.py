"""Wire types of ``personas.generate``: lead data and a style in, a validated set of personas (each with a picture)
and what every model call behind it cost out.

The whole set is cached per user (``cache``, on by default: pictures are made once per unique input), and an identical
request repeated within minutes without an ``idempotencyKey`` is answered from the first (``fromIdempotentCache``).
The lead's e-mail address (``leadEmail``) is only part of the cache key, as a SHA-256 hash: it is never stored,
logged or sent to a model.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final, Literal

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.cache import CacheAgeSeconds, CacheOptions, FromCache, SavedUsd
from schemas.idempotency import FromIdempotentCache, IdempotencyKey
from schemas.money import Money
from schemas.registry import Access, mutation
from schemas.usage import CallStatus, ModelName, PricingStatus, Provider, Usage
from schemas.validation import InvalidInput

__all__ = (
    "GENERATE",
    "LEAD_DATA_MAX_BYTES",
    "LEAD_DATA_MAX_DEPTH",
    "MAX_PERSONAS",
    "GeneratePersonasInput",
    "GeneratePersonasOutput",
    "Persona",
    "PersonaCallReport",
    "PersonaConfig",
    "PersonaCostReport",
)

MAX_PERSONAS: Final = 12
LEAD_DATA_MAX_BYTES: Final = 16_384
"""``leadData`` encoded as compact JSON (UTF-8) holds at most this many bytes."""
LEAD_DATA_MAX_DEPTH: Final = 6
"""Objects and arrays nest at most this deep in ``leadData`` (the object itself is depth 1)."""
_lead_data_encoder: Final = msgspec.json.Encoder()

StyleText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class PersonaConfig(WireInput, frozen=True, kw_only=True):
    """How many personas to make, and in what style. Every field is part of the cache key."""

    num_personas: Annotated[
        int, msgspec.Meta(ge=1, le=MAX_PERSONAS, description=f"How many personas to make, 1 to {MAX_PERSONAS}.")
    ]
    writing_style: (
        Annotated[StyleText, msgspec.Meta(description="The voice of the descriptions, e.g. 'concise, warm'.")] | None
    ) = None
    industry: Annotated[StyleText, msgspec.Meta(description="The industry the personas work in.")] | None = None
    image_style: (
        Annotated[StyleText, msgspec.Meta(description="The style of the pictures, e.g. 'watercolour portrait'.")] | None
    ) = None


class GeneratePersonasInput(WireInput, frozen=True, kw_only=True):
    lead_data: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description=f"What is known about the lead: any JSON object of at most {LEAD_DATA_MAX_BYTES:,} bytes "
            f"(compact JSON) nesting at most {LEAD_DATA_MAX_DEPTH} levels deep. Sent to the model as given."
        ),
    ]
    config: PersonaConfig
    lead_email: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=320,
                description="The lead's e-mail address. Used only inside the cache key, as a SHA-256 hash: never "
                "stored, logged, or sent to a model.",
            ),
        ]
        | None
    ) = None
    model: Annotated[ModelName, msgspec.Meta(description="The text model; default DEFAULT_MODEL.")] | None = None
    image_model: (
        Annotated[ModelName, msgspec.Meta(description="The image model; default PERSONA_IMAGE_MODEL.")] | None
    ) = None
    with_images: Annotated[bool, msgspec.Meta(description="Make one picture per persona (default true).")] = True
    idempotency_key: IdempotencyKey | None = None
    cache: (
        Annotated[
            CacheOptions,
            msgspec.Meta(
                description="The persona-set cache; absent: mode 'use' with a day's TTL (this procedure caches by "
                "default). 'bypass' makes every picture again."
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if not self.lead_data:
            raise InvalidInput("leadData", "`leadData` must hold at least one field")
        depth = _depth(self.lead_data)
        if depth > LEAD_DATA_MAX_DEPTH:
            raise InvalidInput(
                "leadData", f"`leadData` nests {depth} levels deep; at most {LEAD_DATA_MAX_DEPTH} are allowed"
            )
        size = len(_lead_data_encoder.encode(self.lead_data))
        if size > LEAD_DATA_MAX_BYTES:
            raise InvalidInput(
                "leadData", f"`leadData` takes {size:,} bytes as JSON; at most {LEAD_DATA_MAX_BYTES:,} are allowed"
            )


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in ``value`` (a scalar is 0, ``{}`` is 1); stops counting past the limit."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, level = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= LEAD_DATA_MAX_DEPTH:
            pending.extend((child, level + 1) for child in children)
    return deepest


class Persona(WireOutput, frozen=True, kw_only=True):
    """One persona. ``imageUrl`` is null without pictures (``withImages: false``) or when its picture failed."""

    persona_id: uuid.UUID
    name: str
    job_title: str
    age: int
    description: str
    goals: list[str]
    pain_points: list[str]
    appearance: Annotated[str, msgspec.Meta(description="How the persona looks, in one sentence: the picture's brief.")]
    image_url: Annotated[
        str | None,
        msgspec.Meta(
            description="Where the picture can be downloaded (a presigned URL expires after S3_URL_TTL_SECONDS)."
        ),
    ] = None


class PersonaCallReport(WireOutput, frozen=True, kw_only=True):
    """One usage row this request wrote: the text call (or, from the cache, its ``cache_hit`` row) or one picture's
    call (``personaId`` names whose)."""

    call_id: uuid.UUID
    purpose: Annotated[
        Literal["text", "image"], msgspec.Meta(description="text: the persona set's answer; image: one picture.")
    ]
    persona_id: uuid.UUID | None = None
    model: str
    provider: Provider
    status: CallStatus
    error_type: str | None = None
    usage: Usage
    cost_usd: Annotated[Money | None, msgspec.Meta(description="USD; null when the model has no known price.")]
    pricing_status: PricingStatus


class PersonaCostReport(WireOutput, frozen=True, kw_only=True):
    """Every model call this request made (a text answer asked again is two), and their sum."""

    text_calls: list[PersonaCallReport]
    image_calls: list[PersonaCallReport]
    total_cost_usd: Annotated[
        Money | None, msgspec.Meta(description="Sum of the priced calls' costs, USD; null when every one is unpriced.")
    ]
    llm_calls: int
    unpriced_calls: int


class GeneratePersonasOutput(WireOutput, frozen=True, kw_only=True):
    personas: list[Persona]
    model: str
    image_model: str | None
    cost: PersonaCostReport
    from_idempotent_cache: FromIdempotentCache = False
    from_cache: FromCache = False
    cache_age_seconds: CacheAgeSeconds = None
    saved_usd: SavedUsd = None


GENERATE: Final = mutation(
    "personas.generate",
    GeneratePersonasInput,
    GeneratePersonasOutput,
    Access.USER,
    "Make a set of personas from lead data with one structured model call, then one picture per persona (stored, "
    "returned by URL), with what every call cost. The set is cached per user and whole input (a repeat is "
    "fromCache: no model call, no new picture); an identical request within DEDUP_WINDOW_SECONDS without an "
    "idempotencyKey returns the first one's answer (fromIdempotentCache). A picture that fails leaves its persona's "
    "imageUrl null and the set uncached.",
)
