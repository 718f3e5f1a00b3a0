"""The two streamed response bodies of tRPC v11: JSON lines for a streamed batch, server-sent events for a subscription.

Both follow @trpc/server's producers byte for byte where clients could tell the difference (``jsonl.ts``,
``sse.ts``): the jsonl head ``{"0":[[0],[null,0,0]],...}`` announces one promise per call, and each call's envelope
follows as ``[i,0,[[envelope]]]`` when it settles; an SSE event is its ``event:``, ``data:`` and ``id:`` lines
followed by two newlines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec

from schemas.errors import ERROR_CODES, ErrorCode
from server.rpc.errors import TRPCError, error_shape, to_trpc_error
from server.rpc.tracked import Tracked

__all__ = ("SSE_HEADERS", "jsonl_batch", "sse_events")

SSE_HEADERS: Final = {
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
    "connection": "keep-alive",
}

_PING_EVENT: Final = b"event: ping\ndata: \n\n\n"
_RETURN_EVENT: Final = b"event: return\ndata: \n\n\n"
_PING: Final = object()

_RETRIED_JSON_RPC_CODE: Final = ERROR_CODES[ErrorCode.INTERNAL_SERVER_ERROR].json_rpc


class _DeadlineReached(Exception):
    """The connection has been open for ``sse_max_duration_seconds``."""


async def jsonl_batch(calls: Sequence[Callable[[], Awaitable[bytes]]]) -> AsyncIterator[bytes]:
    """The head first, then each call's envelope as soon as it settles; calls run concurrently."""

    async def settle(index: int) -> tuple[int, bytes]:
        return index, await calls[index]()

    tasks = [asyncio.ensure_future(settle(index)) for index in range(len(calls))]
    try:
        yield b"{" + b",".join(b'"%d":[[0],[null,0,%d]]' % (i, i) for i in range(len(calls))) + b"}\n"
        for settled in asyncio.as_completed(tasks):
            index, envelope = await settled
            yield b"[%d,0,[[" % index + envelope + b"]]]\n"
    finally:
        for task in tasks:
            task.cancel()


async def sse_events(
    events: AsyncIterator[Any] | None,
    error: TRPCError | None,
    *,
    path: str,
    output: type[Any],
    tracked: bool,
    encoder: msgspec.json.Encoder,
    connected: bytes,
    ping_interval: float | None,
    max_duration: float | None,
    debug: bool,
) -> AsyncIterator[bytes]:
    """``connected`` first; then the events; then ``return``, or ``serialized-error`` with an error shape.

    An error before the first event (bad input, no key) is also sent as ``serialized-error`` after ``connected``,
    as @trpc/server 11 does, so that the client sees the tRPC error instead of a failed EventSource. When
    ``max_duration`` passes the response ends without ``return``, which makes the client reconnect and resume.

    A subscription that cannot resume (not ``tracked``) cannot continue on a new connection: a reconnect can only
    start it over, and one that must not run twice refuses that itself (``chat.streamMessage`` claims its
    ``requestId``, which an EventSource reconnect repeats, and answers CONFLICT). So such a client is never made to
    reconnect on purpose: its errors never carry a code on which @trpc/client reconnects (``_not_retried``), so the
    caller sees the cause instead of the refusal of a retry.
    """
    yield b"event: connected\ndata: " + connected + b"\n\n\n"
    try:
        if error is not None:
            raise error
        assert events is not None
        async with contextlib.aclosing(_paced(events, ping_interval, max_duration)) as paced:
            async for item in paced:
                if item is _PING:
                    yield _PING_EVENT
                elif tracked:
                    _check_event(item, Tracked, output)
                    yield b"data: " + encoder.encode(item.data) + b"\nid: " + item.id.encode() + b"\n\n\n"
                else:
                    _check_event(item, output, output)
                    yield b"data: " + encoder.encode(item) + b"\n\n\n"
        yield _RETURN_EVENT
    except _DeadlineReached:
        return
    except Exception as exc:
        error = to_trpc_error(exc, path)
        shape = error_shape(error if tracked else _not_retried(error), path, debug=debug)
        yield b"event: serialized-error\ndata: " + encoder.encode(shape) + b"\n\n\n"
    finally:
        if events is not None and hasattr(events, "aclose"):
            await events.aclose()


def _not_retried(error: TRPCError) -> TRPCError:
    """``error`` with a code @trpc/client does not reconnect on: it reconnects on every -32603 (all the 5xx codes).

    A timeout stays a timeout (TIMEOUT); any other failure becomes UNPROCESSABLE_CONTENT with the same message.
    """
    if error.json_rpc_code != _RETRIED_JSON_RPC_CODE:
        return error
    code = ErrorCode.TIMEOUT if error.code is ErrorCode.GATEWAY_TIMEOUT else ErrorCode.UNPROCESSABLE_CONTENT
    return TRPCError(code, error.message, cause=error)


def _check_event(event: object, expected: type[Any], output: type[Any]) -> None:
    data = event.data if isinstance(event, Tracked) else event
    if not isinstance(event, expected) or not isinstance(data, output):
        name = getattr(output, "__name__", str(output))
        declared = f"Tracked[{name}]" if expected is Tracked else name
        raise TypeError(f"subscription yielded {type(event).__name__}, its procedure declares {declared}")


async def _paced(
    events: AsyncIterator[Any], ping_interval: float | None, max_duration: float | None
) -> AsyncGenerator[Any, None]:
    """``events`` with a ``_PING`` whenever none came for ``ping_interval``, ending at ``max_duration``."""
    if ping_interval is None and max_duration is None:
        async for event in events:
            yield event
        return
    loop = asyncio.get_running_loop()
    deadline = None if max_duration is None else loop.time() + max_duration
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(_next(events))
            timeout = ping_interval
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _DeadlineReached
                timeout = remaining if timeout is None else min(timeout, remaining)
            done, _ = await asyncio.wait((pending,), timeout=timeout)
            if not done:
                if deadline is not None and loop.time() >= deadline:
                    raise _DeadlineReached
                yield _PING
                continue
            settled, pending = pending, None
            try:
                event = settled.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.wait((pending,))
            if not pending.cancelled():
                pending.exception()


async def _next(events: AsyncIterator[Any]) -> Any:
    return await events.__anext__()
