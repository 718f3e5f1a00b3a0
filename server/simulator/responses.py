"""Bare ASGI responses: the simulator sits in benchmarks' hot path, and a stream must be able to break.

Litestar passes a returned ASGI callable straight through, so these cost two ``send`` calls and nothing else,
and an SSE stream can end without its final empty body message, which makes the server drop the connection the
way a network failure would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

JSON_CONTENT_TYPE: Final = (b"content-type", b"application/json")
SSE_CONTENT_TYPE: Final = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE: Final = (b"cache-control", b"no-cache")

Header = tuple[bytes, bytes]


def json_response(body: bytes, *, status: int = 200, headers: Sequence[Header] = ()) -> ASGIApp:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [JSON_CONTENT_TYPE, (b"content-length", str(len(body)).encode()), *headers],
    }
    message: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send(message)

    return respond


def sse_response(events: Iterable[bytes], *, complete: bool = True) -> ASGIApp:
    """Send each event as its own chunk; with ``complete=False`` stop without ending the body (a broken stream)."""
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 200,
        "headers": [SSE_CONTENT_TYPE, _NO_CACHE],
    }

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return respond
