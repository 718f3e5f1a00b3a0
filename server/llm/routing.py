"""Which provider serves a model, by the model's name alone.

Apart from the adapters (``server.llm.providers``) so that the settings can check ``DEFAULT_MODEL`` at start-up
without importing the SDKs' module, which itself reads the settings.
"""

from __future__ import annotations

import re
from typing import Final

from schemas.usage import Provider
from server.errors import LLMError, LLMFailure

MODEL_FAMILIES: Final = "gpt-*, o1/o3/o4-style or chatgpt-* (OpenAI), claude-* (Anthropic) or gemini-* (Gemini)"
"""The families a model name may belong to, for error messages."""

_OPENAI_MODEL: Final = re.compile(r"^(gpt-|o\d|chatgpt-|ft:gpt-)")


def model_family(model: str) -> Provider | None:
    """The provider whose family ``model`` belongs to (gpt-*/o*: OpenAI, claude-*: Anthropic, gemini-*: Gemini), or
    None for a name of no family."""
    name = model.lower()
    if name.startswith("claude-"):
        return "anthropic"
    if name.startswith(("gemini-", "models/gemini-")):
        return "gemini"
    if _OPENAI_MODEL.match(name):
        return "openai"
    return None


def provider_for_model(model: str) -> Provider:
    """``model_family``, or ``LLMError(UNKNOWN_MODEL)`` for a name of no family (the caller's BAD_REQUEST)."""
    provider = model_family(model)
    if provider is None:
        raise LLMError(
            LLMFailure.UNKNOWN_MODEL,
            f"unknown model family for {model!r}: expected {MODEL_FAMILIES}",
            error_type="UnknownModel",
        )
    return provider
