"""The usage vocabulary every procedure shares: tokens, calls, money and their one spelling on the wire.

- Tokens are counted in canonical, disjoint buckets (``input``, ``cacheRead``, ``cacheWrite5m``, ``cacheWrite1h``,
  ``output``, ``outputImage``; ``reasoning`` is the part of ``output`` spent thinking). ``prompt`` is every prompt
  bucket and ``total`` is ``prompt + output + outputImage``: wherever a token figure appears it is a
  ``TokenCounts`` (or, in a conversation's running totals, ``totalPromptTokens`` / ``totalOutputTokens`` (text and
  image) / ``totalTokensUsed``, the same sums).
- What the provider itself reported (``promptTokens``, ``completionTokens``, ``totalTokens``, in its own terms) is
  kept apart under ``usage.reported``: for a Gemini thinking call ``completionTokens`` may leave out the thoughts
  that ``output`` counts.
- ``llmCalls`` counts model calls; ``errorCalls``, ``cancelledCalls`` and ``unpricedCalls`` count the ones that
  failed, were abandoned, or had no known price.
- A sum of costs over a group of calls (a conversation, a model, a day...) adds the priced calls' costs; when every
  call of the group is unpriced it is null, not ``"0"``: nothing is known about what they cost (``UNKNOWN_COST``).
  A group without calls costs ``"0"``.
- ``estimated`` is true when a figure is an estimate because the provider never reported usage.
- Money is ``Money`` (``schemas.money``), in fields ending in ``Usd``; ids end in ``Id``; a tagged union's tag is
  ``type``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from schemas.base import WireOutput
from schemas.money import Money

__all__ = (
    "UNKNOWN_COST",
    "CallStatus",
    "ConversationTotals",
    "ModelName",
    "ModelShare",
    "PricingStatus",
    "Provider",
    "ReportedTokens",
    "TokenCounts",
    "Usage",
    "group_cost",
)

Provider = Literal["openai", "anthropic", "gemini"]
PricingStatus = Literal["priced", "unpriced"]
"""``unpriced``: the model had no known price when the call was made; its cost is null, never zero."""
CallStatus = Literal["ok", "error", "cancelled", "cache_hit"]
"""``ok``: the model answered; ``error``: it failed (it may still have billed); ``cancelled``: the caller left;
``cache_hit``: the response cache answered (no provider call, cost 0)."""
UNKNOWN_COST: Final = "Null when every call counted is unpriced: their cost is unknown, not zero."
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]


class TokenCounts(WireOutput, frozen=True, kw_only=True):
    """Tokens in the canonical disjoint buckets, and their sums ``prompt`` and ``total``."""

    input: Annotated[int, msgspec.Meta(description="Prompt tokens neither read from nor written to a cache.")]
    cache_read: Annotated[int, msgspec.Meta(description="Prompt tokens read from the provider's cache.")]
    cache_write_5m: Annotated[int, msgspec.Meta(description="Prompt tokens written to a 5-minute cache.")] = (
        msgspec.field(name="cacheWrite5m")
    )
    cache_write_1h: Annotated[int, msgspec.Meta(description="Prompt tokens written to a 1-hour cache.")] = (
        msgspec.field(name="cacheWrite1h")
    )
    output: Annotated[int, msgspec.Meta(description="Generated text tokens, reasoning included.")]
    output_image: Annotated[
        int, msgspec.Meta(description="Generated image tokens (image models), billed at the image-output rate.")
    ]
    reasoning: Annotated[int, msgspec.Meta(description="The part of output spent on reasoning (thinking).")]
    prompt: Annotated[int, msgspec.Meta(description="input + cacheRead + cacheWrite5m + cacheWrite1h.")]
    total: Annotated[int, msgspec.Meta(description="prompt + output + outputImage.")]


class ReportedTokens(WireOutput, frozen=True, kw_only=True):
    """The token counts exactly as the provider reported them, in its own terms (for reconciling with its bill)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Usage(TokenCounts, frozen=True, kw_only=True):
    """What one model call (or the calls of one procedure, summed) consumed."""

    reported: ReportedTokens
    estimated: Annotated[
        bool,
        msgspec.Meta(
            description="True when the provider never reported usage (a broken stream), or an image call's report "
            "lacked its text/image output split (every output token priced as image): estimated."
        ),
    ] = False


class ConversationTotals(WireOutput, frozen=True, kw_only=True):
    """A conversation's running totals, always equal to the sums over its usage records."""

    total_prompt_tokens: Annotated[int, msgspec.Meta(description="Sum of the calls' `prompt` tokens.")]
    total_output_tokens: Annotated[
        int, msgspec.Meta(description="Sum of the calls' `output` and `outputImage` tokens.")
    ]
    total_tokens_used: Annotated[int, msgspec.Meta(description="totalPromptTokens + totalOutputTokens.")]
    total_cost_usd: Annotated[
        Money | None, msgspec.Meta(description=f"Sum of the priced calls' costs, USD. {UNKNOWN_COST}")
    ]
    llm_calls: int
    unpriced_calls: int


class ModelShare(WireOutput, frozen=True, kw_only=True):
    """One model's part of a conversation's totals. ``totalCostUsd`` counts priced calls only: an unpriced call adds
    calls and tokens but no cost (and when all of them are unpriced, it is null)."""

    model: str
    llm_calls: int
    unpriced_calls: int
    total_tokens_used: Annotated[
        int, msgspec.Meta(description="prompt + output + outputImage tokens of this model's calls.")
    ]
    total_cost_usd: Annotated[
        Money | None, msgspec.Meta(description=f"Sum of the priced calls' costs, USD. {UNKNOWN_COST}")
    ]


def group_cost(cost_usd: Money, llm_calls: int, unpriced_calls: int) -> Money | None:
    """A group's ``costUsd`` from the sum over its priced calls: null when it has calls and all are unpriced."""
    return None if llm_calls > 0 and unpriced_calls == llm_calls else cost_usd
