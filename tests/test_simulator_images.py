"""The simulator's images API (``POST /openai/v1/images/generations``) through the openai SDK's ``images.generate``."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import zlib
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai.types import ImagesResponse

from server.simulator import RunningSimulator, ScriptedImageUsage, ScriptedResponse, running_simulator
from server.simulator.png import solid_png

PROMPT = "A watercolour portrait of a procurement manager"


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with running_simulator() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_state(simulator: RunningSimulator) -> None:
    simulator.state.reset()


@pytest.fixture
async def client(simulator: RunningSimulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=simulator.base_urls.openai, api_key="sk-test", max_retries=0) as client:
        yield client


def _colour(png: bytes) -> bytes:
    """The first pixel of an 8-bit RGB PNG, decoded from its IDAT chunk (after checking every CRC)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    position, idat = 8, b""
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind, data = png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        assert struct.unpack(">I", png[position + 8 + length : position + 12 + length])[0] == zlib.crc32(kind + data)
        idat += data if kind == b"IDAT" else b""
        position += 12 + length
    return zlib.decompress(idat)[1:4]


async def test_a_gpt_image_answer_has_the_real_shape_png_images_and_the_token_split(
    client: openai.AsyncOpenAI,
) -> None:
    before = int(time.time())
    response = await client.images.generate(model="gpt-image-1.5", prompt=PROMPT, n=2, quality="medium")
    assert isinstance(response, ImagesResponse)
    assert response.created >= before
    assert (response.size, response.quality, response.output_format) == ("1024x1024", "medium", "png")
    assert response.data is not None
    images = [base64.b64decode(image.b64_json or "") for image in response.data]
    assert len(images) == 2
    assert images[0] != images[1]
    # The colour is the first three bytes of SHA-256("<index>:<prompt>").
    assert _colour(images[0]) == hashlib.sha256(f"0:{PROMPT}".encode()).digest()[:3]
    assert response.usage is not None
    assert response.usage.input_tokens == response.usage.input_tokens_details.text_tokens == -(-len(PROMPT) // 4)
    assert response.usage.output_tokens_details is not None
    assert response.usage.output_tokens_details.image_tokens == 2 * 1056  # two medium 1024x1024 images
    assert response.usage.output_tokens == 2 * 1056
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


async def test_a_scripted_usage_can_leave_out_the_output_split(
    client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(
        ScriptedResponse(
            provider="openai",
            api="images",
            image_usage=ScriptedImageUsage(text_input=169, text_output=439, image_output=4160, split=False),
        )
    )
    response = await client.images.generate(model="gpt-image-1.5", prompt=PROMPT)
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        169,
        4599,
        4768,
    )
    assert response.usage.output_tokens_details is None


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError), (500, openai.InternalServerError)])
async def test_a_scripted_error_is_the_sdks_own_exception(
    client: openai.AsyncOpenAI, simulator: RunningSimulator, status: int, error: type[Exception]
) -> None:
    simulator.state.enqueue(ScriptedResponse(provider="openai", api="images", status=status, delay_ms=50))
    started = time.perf_counter()
    with pytest.raises(error):
        await client.images.generate(model="gpt-image-1.5", prompt=PROMPT)
    assert time.perf_counter() - started >= 0.05


async def test_dall_e_answers_without_usage_as_base64_or_a_url(client: openai.AsyncOpenAI) -> None:
    b64 = await client.images.generate(model="dall-e-3", prompt=PROMPT, quality="hd", response_format="b64_json")
    assert b64.usage is None
    assert b64.data is not None
    assert base64.b64decode(b64.data[0].b64_json or "").startswith(b"\x89PNG")
    assert b64.data[0].revised_prompt == PROMPT
    url = await client.images.generate(model="dall-e-2", prompt=PROMPT, size="256x256")
    assert url.data is not None
    assert url.data[0].url is not None


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("gpt-image-1.5", {"response_format": "b64_json"}, "response_format"),
        ("dall-e-3", {"quality": "high"}, "Supported values"),
        ("dall-e-3", {"n": 2}, "one image per request"),
        ("dall-e-2", {"output_format": "png"}, "output_format"),
    ],
)
async def test_a_parameter_the_model_does_not_take_is_a_400(
    client: openai.AsyncOpenAI, model: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        await client.images.generate(model=model, prompt=PROMPT, **options)  # type: ignore[call-overload]


async def test_image_scripts_and_chat_scripts_queue_apart(
    client: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.state.enqueue(
        ScriptedResponse(provider="openai", api="images", status=500),
        ScriptedResponse(provider="openai", reply="chat answer"),
    )
    completion = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "chat answer"
    assert simulator.state.pending("openai", "images") == 1
    with pytest.raises(openai.InternalServerError):
        await client.images.generate(model="gpt-image-1.5", prompt=PROMPT)
    assert [request.api for request in simulator.state.requests] == ["chat", "images"]
    [image_request] = simulator.state.requests_to("openai", "images")
    assert image_request.body["prompt"] == PROMPT


async def test_the_control_api_scripts_images(simulator: RunningSimulator, client: openai.AsyncOpenAI) -> None:
    async with httpx.AsyncClient(base_url=simulator.origin) as control:
        script = [{"provider": "openai", "api": "images", "image_usage": {"text_input": 5, "image_output": 7}}]
        queued = await control.post("/_sim/script", json=script)
        assert queued.json() == {"pending": {"openai": 0, "anthropic": 0, "gemini": 0}, "pending_images": 1}
        response = await client.images.generate(model="gpt-image-1.5", prompt=PROMPT)
        assert response.usage is not None
        assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 7)
        recorded = (await control.get("/_sim/requests")).json()
        assert recorded[0]["api"] == "images"


def test_an_images_script_holds_only_what_an_images_answer_has() -> None:
    with pytest.raises(ValueError, match="only provider 'openai'"):
        ScriptedResponse(provider="anthropic", api="images")
    with pytest.raises(ValueError, match="belong to chat answers"):
        ScriptedResponse(provider="openai", api="images", reply="text")
    with pytest.raises(ValueError, match="belongs to an images answer"):
        ScriptedResponse(provider="openai", image_usage=ScriptedImageUsage(image_output=1))


def test_the_png_is_small_and_one_colour() -> None:
    png = solid_png(10, 20, 30)
    assert len(png) < 200
    assert _colour(png) == bytes((10, 20, 30))
