"""An offline stand-in for OpenAI, Anthropic and Gemini that the official SDKs talk to over real HTTP.

Typical test use::

    async with running_simulator() as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_urls.openai, api_key="sk-test")
        sim.state.enqueue(ScriptedResponse(provider="openai", reply="hi", usage=ScriptedUsage(prompt=10, completion=2)))
        ...
        assert sim.state.requests[-1].body["messages"] == [...]

Without a script every provider answers deterministically (see ``default_reply``), and a request that asks for
JSON (``response_format``, Anthropic ``output_config.format``, or a system prompt line ``JSON schema: {...}``)
gets a minimal object valid against the schema. The API key ``INVALID_API_KEY`` is rejected with a 401.

Public API:
- ``running_simulator(state=None, *, host="127.0.0.1") -> AsyncContextManager[RunningSimulator]``
- ``RunningSimulator``: ``origin``, ``state``, ``base_urls`` (``SimulatorBaseUrls``: ``openai``, ``anthropic``,
  ``gemini``, and ``SimulatorBaseUrls.for_origin(origin)`` for a simulator served elsewhere)
- ``SimulatorState``: ``enqueue(*responses)``, ``reset()``, ``pending(provider)``, ``requests``,
  ``requests_to(provider)``
- ``ScriptedResponse``, ``ScriptedUsage``, ``ScriptedImageUsage``: what a provider answers next (also accepted as JSON
  by ``POST /_sim/script``); ``api="images"`` scripts OpenAI's ``images.generate`` (``server.simulator.images_format``)
- ``ReceivedRequest``: ``provider`` and ``body`` of a request the simulator received
- ``create_simulator_app(state=None) -> Litestar``; ``python -m server.simulator --port 8001`` serves it standalone
"""

from server.simulator.app import create_simulator_app
from server.simulator.endpoint import INVALID_API_KEY
from server.simulator.runner import RunningSimulator, SimulatorBaseUrls, running_simulator
from server.simulator.script import (
    Provider,
    ReceivedRequest,
    ScriptedImageUsage,
    ScriptedResponse,
    ScriptedUsage,
    SimulatorState,
)

__all__ = [
    "INVALID_API_KEY",
    "Provider",
    "ReceivedRequest",
    "RunningSimulator",
    "ScriptedImageUsage",
    "ScriptedResponse",
    "ScriptedUsage",
    "SimulatorBaseUrls",
    "SimulatorState",
    "create_simulator_app",
    "running_simulator",
]
