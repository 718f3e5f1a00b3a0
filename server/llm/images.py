"""Image generation through the OpenAI images API (``images.generate``), for ``LLMCore.generate_image``.

One image per call, decoded once from base64. GPT Image models (``gpt-image-*``, ``chatgpt-image-*``) answer PNG
(``output_format="png"``; they refuse ``response_format``) and report token usage: text in, text and image out
(``usage_from_openai_images``), priced at the image-output rate for image tokens. DALL·E models (``dall-e-2``,
``dall-e-3``) are asked for ``response_format="b64_json"``, report no usage and are priced per image by quality and
size (``PriceCatalogue.price_image``, the bundled price file). The OpenAI provider's SDK client (one connection pool,
the same key, timeout and retries) serves both its chat and its images API.

An image call's record carries the labels ``image_size`` and ``image_quality`` (the quality as sent: ``auto`` is
``standard`` for DALL·E), so that the row, and the sweeper pricing a claim its process left, know how it is priced.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final, cast

import msgspec
import openai
from openai.types import ImagesResponse

from schemas.usage import Provider
from server.errors import LLMError, LLMFailure
from server.llm.providers import OpenAIChatAdapter, ProviderSet, impossible_usage, translate_error
from server.llm.usage import NO_USAGE, TokenUsage, UsageReportError, estimate_usage, usage_from_openai_images
from server.settings import IMAGE_MODEL_PREFIXES

__all__ = (
    "IMAGE_QUALITY_LABEL",
    "IMAGE_SIZE_LABEL",
    "GeneratedImage",
    "ImageRequest",
    "OpenAIImagesAdapter",
    "estimated_image_usage",
    "image_adapter",
    "image_output_tokens_bound",
    "image_provider_for_model",
    "is_image_claim",
    "sent_quality",
)

IMAGE_SIZE_LABEL: Final = "image_size"
IMAGE_QUALITY_LABEL: Final = "image_quality"
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
PNG: Final = "image/png"

_HIGH_QUALITY_IMAGE_TOKENS: Final = {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208}
"""Image tokens of one high-quality image (the most a quality costs) by size, for GPT Image models: OpenAI's image
generation guide ("Cost and latency"); another size is scaled by its pixel count, ``auto`` is the largest."""
IMAGE_TEXT_OUTPUT_ALLOWANCE: Final = 1024
"""Text output tokens an image call may report besides its image (OpenAI's example reports 439), in the bound."""


class ImageRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One image to generate. ``quality``: ``auto``/``low``/``medium``/``high`` for GPT Image models,
    ``standard``/``hd`` (or ``auto``, sent as ``standard``) for dall-e-3, ``standard`` for dall-e-2. ``size``:
    ``WIDTHxHEIGHT`` as the model takes it (``1024x1024``, ``1536x1024``, ``1024x1792``...) or ``auto``."""

    model: str
    prompt: str
    size: str = "1024x1024"
    quality: str = "auto"


class GeneratedImage(msgspec.Struct, frozen=True, kw_only=True):
    image: bytes
    content_type: str
    usage: TokenUsage
    model: str


def _is_dall_e(model: str) -> bool:
    return model.lower().startswith("dall-e-")


def image_provider_for_model(model: str) -> Provider:
    """``openai`` for GPT Image and DALL·E models; ``LLMError(UNKNOWN_MODEL)`` for any other name."""
    name = model.lower()
    if name.startswith(IMAGE_MODEL_PREFIXES):
        return "openai"
    raise LLMError(
        LLMFailure.UNKNOWN_MODEL,
        f"{model!r} is not an image model: expected gpt-image-*, chatgpt-image-* or dall-e-* (OpenAI)",
        error_type="UnknownModel",
    )


def sent_quality(request: ImageRequest) -> str:
    """The quality sent to the API: DALL·E takes ``standard`` or ``hd``, and ``auto`` means its default."""
    quality = request.quality.lower()
    return "standard" if _is_dall_e(request.model) and quality == "auto" else quality


def image_output_tokens_bound(request: ImageRequest) -> int:
    """At most how many output tokens the call reports: a high-quality image of its size plus a text allowance (0
    for a DALL·E model, priced per image). A budget reserves this at the image-output rate."""
    if _is_dall_e(request.model):
        return 0
    tokens = _HIGH_QUALITY_IMAGE_TOKENS.get(request.size)
    if tokens is None:
        width, _, height = request.size.partition("x")
        pixels = int(width) * int(height) if width.isdigit() and height.isdigit() else 1024 * 1536
        tokens = -(-max(_HIGH_QUALITY_IMAGE_TOKENS.values()) * pixels // (1024 * 1536))
    return tokens + IMAGE_TEXT_OUTPUT_ALLOWANCE


def is_image_claim(metadata: object) -> bool:
    """Whether a claim's or record's metadata labels an image call."""
    return isinstance(metadata, dict) and IMAGE_SIZE_LABEL in metadata


@dataclass(slots=True)
class OpenAIImagesAdapter:
    """``images.generate`` over the openai SDK; raises ``LLMError`` for a provider failure."""

    client: openai.AsyncOpenAI
    name: Provider = "openai"

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        quality = sent_quality(request)
        try:
            if _is_dall_e(request.model):
                response = await self.client.images.generate(
                    model=request.model,
                    prompt=request.prompt,
                    n=1,
                    size=request.size,
                    quality=cast(Any, quality),  # the API validates it, as every other value
                    response_format="b64_json",
                )
            else:
                response = await self.client.images.generate(
                    model=request.model,
                    prompt=request.prompt,
                    n=1,
                    size=request.size,
                    quality=cast(Any, quality),
                    output_format="png",
                )
        except (openai.OpenAIError, ValueError) as error:
            raise translate_error(self.name, error) from None
        # The provider generated (and bills) the image from here on: a failure below is billable.
        image = _decoded(response)
        return GeneratedImage(image=image, content_type=PNG, usage=self._usage(request, response), model=request.model)

    def _usage(self, request: ImageRequest, response: ImagesResponse) -> TokenUsage:
        if response.usage is not None:
            try:
                return usage_from_openai_images(response.usage)
            except UsageReportError as error:
                raise impossible_usage(self.name, error, billable=True) from None
        if _is_dall_e(request.model):  # billed per image: no tokens
            return NO_USAGE
        return estimated_image_usage(request)  # a GPT Image answer without usage


def estimated_image_usage(request: ImageRequest) -> TokenUsage:
    """The usage of an image call without the provider's report (none sent, or the call ended before it): the prompt
    estimated and the image at its bound (``image_output_tokens_bound``), flagged estimated."""
    prompt = estimate_usage(len(request.prompt), 0)
    return msgspec.structs.replace(prompt, output_image=image_output_tokens_bound(request))


def _decoded(response: ImagesResponse) -> bytes:
    first = response.data[0] if response.data else None
    if first is None or not first.b64_json:
        raise LLMError(
            LLMFailure.BAD_RESPONSE, "openai returned no image data", error_type="MissingImage", billable=True
        )
    try:
        image = base64.b64decode(first.b64_json, validate=True)
    except (binascii.Error, ValueError):
        raise LLMError(
            LLMFailure.BAD_RESPONSE, "openai returned an image that is not base64", error_type="BadImage", billable=True
        ) from None
    if not image.startswith(PNG_SIGNATURE):
        raise LLMError(
            LLMFailure.BAD_RESPONSE, "openai returned an image that is not a PNG", error_type="BadImage", billable=True
        )
    return image


def image_adapter(providers: ProviderSet, provider: Provider) -> OpenAIImagesAdapter:
    """The images API of ``provider``'s configured client; ``LLMError(NOT_CONFIGURED)`` when it has none."""
    chat = providers.adapter(provider)  # NOT_CONFIGURED without a key
    if not isinstance(chat, OpenAIChatAdapter) or chat.name != "openai":
        raise LLMError(
            LLMFailure.NOT_CONFIGURED, f"{provider} has no images API on this server", error_type="NoImagesApi"
        )
    return OpenAIImagesAdapter(chat.client)
