"""OpenAI's images API, ``POST /images/generations``, as the openai SDK's ``images.generate`` calls it.

GPT Image models (``gpt-image-*``, ``chatgpt-image-*``) always answer base64 PNGs (``output_format``; they refuse
``response_format``) with token usage: text input, and output split into text and image tokens
(``output_tokens_details``), as ``openai.types.ImagesResponse`` describes. DALL·E models (``dall-e-2``, ``dall-e-3``)
answer ``b64_json`` or a URL (``response_format``, default ``url``) and no usage: they are billed per image.

Each image is a real 64x64 PNG of one colour derived from the prompt (``png_for``). Without a script the usage is
``ceil(len(prompt) / 4)`` text input tokens, no text output, and the image tokens OpenAI documents for the quality
and size (``IMAGE_TOKENS``; ``auto`` is answered as high quality at 1024x1024).
"""

from __future__ import annotations

import base64
import time
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.types import ASGIApp

from server.simulator.default_reply import estimate_tokens
from server.simulator.endpoint import ProviderEndpoint
from server.simulator.openai_format import openai_error, reject_openai_credentials
from server.simulator.png import png_for
from server.simulator.responses import json_response
from server.simulator.script import ScriptedImageUsage, ScriptedResponse

IMAGE_TOKENS: Final[dict[tuple[str, str], int]] = {
    ("low", "1024x1024"): 272,
    ("low", "1024x1536"): 408,
    ("low", "1536x1024"): 400,
    ("medium", "1024x1024"): 1056,
    ("medium", "1024x1536"): 1584,
    ("medium", "1536x1024"): 1568,
    ("high", "1024x1024"): 4160,
    ("high", "1024x1536"): 6240,
    ("high", "1536x1024"): 6208,
}
"""Output image tokens per image of GPT Image models by quality and size (OpenAI's image generation guide, "Cost and
latency"); another size is scaled from 1024x1024 by its pixel count."""
_GPT_IMAGE_QUALITIES: Final = frozenset({"low", "medium", "high", "auto"})
_DALL_E_QUALITIES: Final = {"dall-e-2": frozenset({"standard"}), "dall-e-3": frozenset({"standard", "hd"})}
_ENCODER: Final = msgspec.json.Encoder()


class ImageGenerationRequest(msgspec.Struct, kw_only=True):
    prompt: str
    model: str = "dall-e-2"
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    response_format: str | None = None
    output_format: str | None = None


class _Image(msgspec.Struct, kw_only=True, omit_defaults=True):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _InputDetails(msgspec.Struct, kw_only=True):
    text_tokens: int
    image_tokens: int


class _OutputDetails(msgspec.Struct, kw_only=True):
    text_tokens: int
    image_tokens: int


class _Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    input_tokens: int
    input_tokens_details: _InputDetails
    output_tokens: int
    total_tokens: int
    output_tokens_details: _OutputDetails | None = None


class _ImagesResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    created: int
    data: list[_Image]
    usage: _Usage | None = None
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    background: str | None = None


def is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image-", "chatgpt-image-"))


def image_tokens(quality: str, size: str) -> int:
    """Output image tokens of one image at ``quality`` (low/medium/high) and ``size`` (``WIDTHxHEIGHT``)."""
    known = IMAGE_TOKENS.get((quality, size))
    if known is not None:
        return known
    width, _, height = size.partition("x")
    return -(-IMAGE_TOKENS[quality, "1024x1024"] * int(width) * int(height) // (1024 * 1024))


class ImagesEndpoint(ProviderEndpoint[ImageGenerationRequest]):
    """``POST {OPENAI_PREFIX}/images/generations``."""

    def __init__(self) -> None:
        super().__init__("openai", msgspec.json.Decoder(ImageGenerationRequest), api="images")

    def reject_credentials(self, request: Request[Any, Any, Any]) -> ASGIApp | None:
        return reject_openai_credentials(request, self.error)

    def error(self, status: int, message: str | None = None, *, retry_after: float | None = None) -> ASGIApp:
        return openai_error(status, message, retry_after=retry_after)

    def malformed(self, request: ImageGenerationRequest) -> ASGIApp:
        return json_response(b'{"created": 1, "data": [{"b64_json": "iVBOR')

    def answer(self, request: ImageGenerationRequest, script: ScriptedResponse | None, sequence: int) -> ASGIApp:
        refusal = _refusal(request)
        if refusal is not None:
            return self.error(400, refusal)
        count = request.n or 1
        if is_gpt_image(request.model):
            quality = request.quality if request.quality in ("low", "medium", "high") else "high"
            size = request.size if request.size not in (None, "auto") else "1024x1024"
            assert size is not None
            scripted = script.image_usage if script is not None else None
            response = _ImagesResponse(
                created=int(time.time()),
                data=[_Image(b64_json=_b64(request.prompt, index)) for index in range(count)],
                usage=_usage(scripted or _default_usage(request.prompt, quality, size, count)),
                size=size,
                quality=quality,
                output_format="png",
                background="opaque",
            )
        else:
            as_url = request.response_format in (None, "url")
            response = _ImagesResponse(
                created=int(time.time()),
                data=[
                    _Image(
                        url=f"https://simulator.invalid/images/{sequence}-{index}.png" if as_url else None,
                        b64_json=None if as_url else _b64(request.prompt, index),
                        revised_prompt=request.prompt if request.model == "dall-e-3" else None,
                    )
                    for index in range(count)
                ],
            )
        return json_response(_ENCODER.encode(response))


def _refusal(request: ImageGenerationRequest) -> str | None:
    """The 400 message the real API gives a request its model does not take, or None."""
    if not request.prompt:
        return "Invalid prompt: the prompt must not be empty."
    if request.n is not None and not 1 <= request.n <= 10:
        return "Invalid 'n': must be between 1 and 10."
    if is_gpt_image(request.model):
        if request.response_format is not None:
            return "Unknown parameter: 'response_format'."
        if request.quality is not None and request.quality not in _GPT_IMAGE_QUALITIES:
            return f"Invalid value: '{request.quality}'. Supported values are: 'low', 'medium', 'high', and 'auto'."
        if request.output_format not in (None, "png"):
            return "The simulator answers png only."
        return None
    qualities = _DALL_E_QUALITIES.get(request.model)
    if qualities is None:
        return f"The model '{request.model}' does not exist."
    if request.output_format is not None:
        return "Unknown parameter: 'output_format'."
    if request.quality is not None and request.quality not in qualities:
        return f"Invalid value: '{request.quality}'. Supported values are: {sorted(qualities)}."
    if request.model == "dall-e-3" and (request.n or 1) != 1:
        return "Invalid 'n': dall-e-3 generates one image per request."
    return None


def _b64(prompt: str, index: int) -> str:
    return base64.b64encode(png_for(prompt, index)).decode()


def _default_usage(prompt: str, quality: str, size: str, count: int) -> ScriptedImageUsage:
    return ScriptedImageUsage(text_input=estimate_tokens(prompt), image_output=image_tokens(quality, size) * count)


def _usage(counts: ScriptedImageUsage) -> _Usage:
    output = counts.text_output + counts.image_output
    details = _OutputDetails(text_tokens=counts.text_output, image_tokens=counts.image_output)
    return _Usage(
        input_tokens=counts.text_input + counts.image_input,
        input_tokens_details=_InputDetails(text_tokens=counts.text_input, image_tokens=counts.image_input),
        output_tokens=output,
        total_tokens=counts.text_input + counts.image_input + output,
        output_tokens_details=details if counts.split else None,
    )
