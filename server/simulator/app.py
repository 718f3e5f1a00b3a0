"""The simulator's ASGI app: three provider APIs under their own prefixes, plus the control API under ``/_sim``.

The prefixes are what the SDKs' base URLs point at:
- OpenAI: ``{origin}/openai/v1`` (the openai SDK appends ``/chat/completions``, ``/images/generations``);
- Anthropic: ``{origin}/anthropic`` (the anthropic SDK appends ``/v1/messages``);
- Gemini: ``{origin}/gemini/v1beta/openai/`` (the openai SDK appends ``chat/completions``).

Control API: ``POST /_sim/script`` queues a JSON list of scripted responses, ``POST /_sim/reset`` clears queues,
recorded requests and counters (both answer the pending counts: ``pending`` per provider's chat API,
``pending_images`` for OpenAI's images API), ``GET /_sim/requests`` lists what the SDKs sent.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.types import ASGIApp

from server.simulator.anthropic_format import MessagesEndpoint
from server.simulator.images_format import ImagesEndpoint
from server.simulator.openai_format import ChatCompletionsEndpoint
from server.simulator.responses import json_response
from server.simulator.script import PROVIDERS, Provider, ScriptedResponse, SimulatorState

OPENAI_PREFIX: Final = "/openai/v1"
ANTHROPIC_PREFIX: Final = "/anthropic"
GEMINI_PREFIX: Final = "/gemini/v1beta/openai"

_SCRIPT_DECODER: Final = msgspec.json.Decoder(list[ScriptedResponse])
_ENCODER: Final = msgspec.json.Encoder()


class _ControlError(msgspec.Struct, kw_only=True):
    error: str


class _Pending(msgspec.Struct, kw_only=True):
    pending: dict[Provider, int]
    pending_images: int


def create_simulator_app(state: SimulatorState | None = None) -> Litestar:
    """Build the app around ``state`` (a fresh one by default), so an in-process test can script it directly."""
    simulator = state if state is not None else SimulatorState()
    openai_endpoint = ChatCompletionsEndpoint("openai")
    gemini_endpoint = ChatCompletionsEndpoint("gemini")
    anthropic_endpoint = MessagesEndpoint()
    images_endpoint = ImagesEndpoint()

    def pending() -> ASGIApp:
        counts = {provider: simulator.pending(provider) for provider in PROVIDERS}
        images = simulator.pending("openai", "images")
        return json_response(_ENCODER.encode(_Pending(pending=counts, pending_images=images)))

    @post(f"{OPENAI_PREFIX}/chat/completions", operation_id="openaiChatCompletions")
    async def openai_chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
        return await openai_endpoint.handle(request, simulator)

    @post(f"{OPENAI_PREFIX}/images/generations", operation_id="openaiImagesGenerations")
    async def openai_images_generations(request: Request[Any, Any, Any]) -> ASGIApp:
        return await images_endpoint.handle(request, simulator)

    @post(f"{GEMINI_PREFIX}/chat/completions", operation_id="geminiChatCompletions")
    async def gemini_chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
        return await gemini_endpoint.handle(request, simulator)

    @post(f"{ANTHROPIC_PREFIX}/v1/messages", operation_id="anthropicMessages")
    async def anthropic_messages(request: Request[Any, Any, Any]) -> ASGIApp:
        return await anthropic_endpoint.handle(request, simulator)

    @post("/_sim/script", operation_id="simScript")
    async def script(request: Request[Any, Any, Any]) -> ASGIApp:
        try:
            responses = _SCRIPT_DECODER.decode(await request.body())
        except msgspec.DecodeError as exc:
            return json_response(_ENCODER.encode(_ControlError(error=str(exc))), status=400)
        simulator.enqueue(*responses)
        return pending()

    @post("/_sim/reset", operation_id="simReset")
    async def reset() -> ASGIApp:
        simulator.reset()
        return pending()

    @get("/_sim/requests", operation_id="simRequests")
    async def requests() -> ASGIApp:
        return json_response(_ENCODER.encode(simulator.requests))

    return Litestar(
        route_handlers=[
            openai_chat_completions,
            openai_images_generations,
            gemini_chat_completions,
            anthropic_messages,
            script,
            reset,
            requests,
        ],
        openapi_config=None,
        logging_config=None,
        state=State({"simulator": simulator}),
    )
