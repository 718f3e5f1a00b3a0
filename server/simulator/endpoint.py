"""The request flow every simulated provider shares; the wire formats fill in the provider-specific steps.

Order matters and mirrors the real APIs: a bad key is rejected before the body is read and consumes no script;
a body that does not decode is a 400 that consumes no script either; every accepted request is recorded and
consumes exactly one script entry, whatever that entry makes of it.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, Final, Generic, TypeVar

import msgspec
from litestar import Request
from litestar.types import ASGIApp

from server.simulator.script import Api, Provider, ScriptedResponse, SimulatorState

INVALID_API_KEY: Final = "sk-invalid"
"""The API key every simulated provider rejects with its 401."""

RequestT = TypeVar("RequestT")


class ProviderEndpoint(abc.ABC, Generic[RequestT]):
    def __init__(self, provider: Provider, decoder: msgspec.json.Decoder[RequestT], api: Api = "chat") -> None:
        self.provider: Final = provider
        self.api: Final = api
        self._decoder = decoder

    async def handle(self, request: Request[Any, Any, Any], state: SimulatorState) -> ASGIApp:
        rejection = self.reject_credentials(request)
        if rejection is not None:
            return rejection
        body = await request.body()
        try:
            decoded = self._decoder.decode(body)
        except msgspec.DecodeError as exc:
            return self.error(400, f"Invalid request body: {exc}")
        state.record(self.provider, body, self.api)
        script = state.next_script(self.provider, self.api)
        if script is None:
            return self.answer(decoded, None, state.next_sequence())
        if script.delay_ms:
            await asyncio.sleep(script.delay_ms / 1000)
        if script.status is not None:
            return self.error(script.status, retry_after=script.retry_after)
        if script.malformed:
            return self.malformed(decoded)
        return self.answer(decoded, script, state.next_sequence())

    @abc.abstractmethod
    def reject_credentials(self, request: Request[Any, Any, Any]) -> ASGIApp | None:
        """The provider's 401 when the key is missing or is ``INVALID_API_KEY``; None lets the request in."""

    @abc.abstractmethod
    def error(self, status: int, message: str | None = None, *, retry_after: float | None = None) -> ASGIApp:
        """An error in the provider's own JSON shape, so the SDK raises the same exception class as in production."""

    @abc.abstractmethod
    def malformed(self, request: RequestT) -> ASGIApp:
        """A 200 whose body (or first stream event) is not valid JSON."""

    @abc.abstractmethod
    def answer(self, request: RequestT, script: ScriptedResponse | None, sequence: int) -> ASGIApp:
        """The successful response, streamed when the request asked for it."""


def retry_after_headers(retry_after: float | None) -> list[tuple[bytes, bytes]]:
    if retry_after is None:
        return []
    seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
    return [(b"retry-after", str(seconds).encode())]


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    return authorization[7:].strip() or None
