"""A subscription: an async iterator over a procedure's events, carried by server-sent events.

It behaves like @trpc/client's httpSubscriptionLink: it ends at ``event: return``, raises a non-retryable
``serialized-error``, and reconnects — sending ``Last-Event-ID`` so that a resumable procedure continues after the
last event received — when the connection drops, ends without ``return``, goes silent past the server's
``reconnectAfterInactivityMs``, or reports a retryable error (INTERNAL_SERVER_ERROR, BAD_GATEWAY, ...). A procedure
that cannot resume is given no reconnects (``max_reconnects=0``): those cases raise instead of starting it over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
import msgspec

from schemas.errors import RETRYABLE_CODES
from tollbooth_client._envelope import shape_error
from tollbooth_client._sse import ServerSentEvent, parse_events
from tollbooth_client._transport import Transport
from tollbooth_client.errors import TRPCClientError

__all__ = ("Subscription",)

EventT = TypeVar("EventT")

_connected_decoder = msgspec.json.Decoder(dict[str, Any])


class _Reconnect(Exception):
    """The stream ended in a way after which the client should connect again."""


class Subscription(Generic[EventT]):
    """``async for event in subscription``; ``last_event_id`` is the id of the last event received, if any.

    Use it as an async context manager (or call ``aclose``) to close the connection when leaving early.
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        input: bytes | None,
        decoder: msgspec.json.Decoder[EventT],
        *,
        max_reconnects: int,
        reconnect_delay: float,
    ) -> None:
        self.path = path
        self.last_event_id: str | None = None
        self._transport = transport
        self._input = input
        self._decoder = decoder
        self._max_reconnects = max_reconnects
        self._reconnect_delay = reconnect_delay
        self._events = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> EventT:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[EventT, None]:
        failures = 0
        while True:
            try:
                async with self._transport.event_stream(self.path, self._input, self.last_event_id) as response:
                    async for event in self._stream(response):
                        failures = 0
                        yield event
                    return
            except (_Reconnect, httpx.TransportError) as exc:
                failures += 1
                if failures > self._max_reconnects:
                    if isinstance(exc, httpx.TransportError):
                        raise
                    if isinstance(exc.__cause__, TRPCClientError):
                        raise exc.__cause__ from None
                    times = f" {failures} times in a row" if failures > 1 else ""
                    raise TRPCClientError.from_status(502, f"The event stream broke off{times}", self.path) from None
            await asyncio.sleep(self._reconnect_delay)

    async def _stream(self, response: httpx.Response) -> AsyncIterator[EventT]:
        """The events of one connection; returns at ``return``, raises ``_Reconnect`` when it should be retried."""
        inactivity: float | None = None
        events = parse_events(response.aiter_lines())
        while True:
            try:
                async with asyncio.timeout(inactivity):
                    event = await anext(events, None)
            except TimeoutError:
                raise _Reconnect from None
            if event is None:
                raise _Reconnect
            match event.event:
                case "connected":
                    inactivity = _inactivity_timeout(event)
                case "ping":
                    pass
                case "return":
                    return
                case "serialized-error":
                    error = shape_error(event.data, self.path)
                    if error.code in RETRYABLE_CODES:
                        raise _Reconnect from error
                    raise error
                case "message":
                    yield self._decode(event)

    def _decode(self, event: ServerSentEvent) -> EventT:
        try:
            value = self._decoder.decode(event.data)
        except msgspec.DecodeError as exc:
            raise TRPCClientError.from_status(500, f"Malformed event: {exc}", self.path) from exc
        if event.last_event_id:  # an empty id clears the id, it names no event
            self.last_event_id = event.last_event_id
        return value


def _inactivity_timeout(event: ServerSentEvent) -> float | None:
    try:
        options = _connected_decoder.decode(event.data)
    except msgspec.DecodeError:
        return None
    milliseconds = options.get("reconnectAfterInactivityMs")
    return milliseconds / 1000 if isinstance(milliseconds, int | float) and milliseconds > 0 else None
