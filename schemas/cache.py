"""The response cache: how a call asks for an answer it already paid for, and how a reply says it was one.

A chat procedure's input takes an optional ``cache``. ``use`` answers from the cache when this user asked exactly this
before (same procedure, model and whole request, history included) and the entry has not expired; otherwise it calls
the model and stores the answer (only a complete, valid one). ``refresh`` calls the model and replaces the entry;
``bypass`` neither reads nor writes. An answer from the cache costs 0 and says what it saved.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from schemas.base import WireInput
from schemas.money import Money

__all__ = ("CACHE_TTL_MAX_SECONDS", "CacheAgeSeconds", "CacheOptions", "FromCache", "SavedUsd")

CACHE_TTL_MAX_SECONDS: Final = 30 * 86_400


class CacheOptions(WireInput, frozen=True, kw_only=True):
    """Whether this call may be answered from, and stored in, the response cache (per user, never shared)."""

    mode: Annotated[
        Literal["use", "refresh", "bypass"],
        msgspec.Meta(
            description="use: answer from the cache when it can, else call the model and store the answer; "
            "refresh: call the model and replace the stored answer; bypass: neither read nor write the cache."
        ),
    ] = "use"
    ttl_seconds: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=CACHE_TTL_MAX_SECONDS,
                description="How long a stored answer is kept, in seconds (default a day, at most 30 days).",
            ),
        ]
        | None
    ) = None


FromCache = Annotated[
    bool, msgspec.Meta(description="True when the response cache answered: no model call was made, it cost 0.")
]
CacheAgeSeconds = Annotated[
    float | None, msgspec.Meta(description="How old the cached answer is, in seconds; null when not from the cache.")
]
SavedUsd = Annotated[
    Money | None,
    msgspec.Meta(
        description="What the cached answer would cost today (its original usage at today's rates), USD; null when "
        "not from the cache, or when the model has no known price."
    ),
]
