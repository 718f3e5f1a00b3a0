"""HTTP for calls: one request per call, or the calls of one event-loop tick batched like tRPC's httpBatchLink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import msgspec

from schemas.registry import ProcedureKind
from tollbooth_client._envelope import EnvelopeDecoder, error_of

__all__ = ("Transport",)

_raw_list_decoder: Final = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(slots=True)
class _Pending:
    path: str
    input: bytes | None
    decoder: EnvelopeDecoder[Any]
    future: asyncio.Future[Any] = field(repr=False)


class Transport:
    """Sends calls over one httpx client.

    With batching on, calls issued in the same tick of the event loop (e.g. by ``asyncio.gather``) leave as one
    ``?batch=1`` request per kind, at most ``max_batch_size`` calls each; a tick with one call sends it unbatched.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        owns_http: bool,
        batching: bool,
        max_batch_size: int,
        max_url_length: int,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._http = http
        self._owns_http = owns_http
        self._batching = batching
        self._max_batch_size = max_batch_size
        self._max_url_length = max_url_length
        self._queues: dict[ProcedureKind, list[_Pending]] = {ProcedureKind.QUERY: [], ProcedureKind.MUTATION: []}
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()

    async def call(self, kind: ProcedureKind, path: str, input: bytes | None, decoder: EnvelopeDecoder[Any]) -> Any:
        if not self._batching:
            return await self._send_one(kind, path, input, decoder)
        loop = asyncio.get_running_loop()
        pending = _Pending(path, input, decoder, loop.create_future())
        self._queues[kind].append(pending)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await pending.future

    async def aclose(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        if self._owns_http:
            await self._http.aclose()

    @asynccontextmanager
    async def event_stream(
        self, path: str, input: bytes | None, last_event_id: str | None
    ) -> AsyncIterator[httpx.Response]:
        """An open ``text/event-stream`` response; a non-SSE answer is raised as its tRPC error."""
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        params = {} if input is None else {"input": input.decode()}
        request = self._http.build_request(
            "GET", path, params=params, headers=headers, timeout=httpx.Timeout(self._http.timeout.connect, read=None)
        )
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code != 200 or not response.headers.get("content-type", "").startswith(
                "text/event-stream"
            ):
                raise error_of(await response.aread(), response.status_code, path)
            yield response
        finally:
            await response.aclose()

    def _flush(self) -> None:
        self._flush_scheduled = False
        for kind, queue in self._queues.items():
            if not queue:
                continue
            self._queues[kind] = []
            for group in self._groups(kind, queue):
                task = asyncio.ensure_future(self._settle(kind, group))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    def _groups(self, kind: ProcedureKind, queue: list[_Pending]) -> list[list[_Pending]]:
        """Split into batches of at most ``max_batch_size`` calls and, for GET, at most ``max_url_length`` of input."""
        groups: list[list[_Pending]] = []
        current: list[_Pending] = []
        size = 0
        for pending in queue:
            length = len(pending.path) + (len(pending.input) * 3 if pending.input else 0) + 8
            too_long = kind is ProcedureKind.QUERY and current and size + length > self._max_url_length
            if len(current) == self._max_batch_size or too_long:
                groups.append(current)
                current, size = [], 0
            current.append(pending)
            size += length
        groups.append(current)
        return groups

    async def _settle(self, kind: ProcedureKind, group: list[_Pending]) -> None:
        try:
            if len(group) == 1:
                only = group[0]
                results: list[Any] = [await self._send_one(kind, only.path, only.input, only.decoder)]
            else:
                results = await self._send_batch(kind, group)
        except asyncio.CancelledError:
            for pending in group:
                pending.future.cancel()
            raise
        except Exception as exc:
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, result in zip(group, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    async def _send_one(
        self, kind: ProcedureKind, path: str, input: bytes | None, decoder: EnvelopeDecoder[Any]
    ) -> Any:
        if kind is ProcedureKind.QUERY:
            params = {} if input is None else {"input": input.decode()}
            response = await self._http.get(path, params=params)
        else:
            response = await self._http.post(path, content=input or b"", headers={"content-type": "application/json"})
        return decoder.decode(response.content, response.status_code)

    async def _send_batch(self, kind: ProcedureKind, group: list[_Pending]) -> list[Any]:
        """Each call's output, or the ``TRPCClientError`` it failed with."""
        path = ",".join(pending.path for pending in group)
        entries = [b'"%d":' % index + pending.input for index, pending in enumerate(group) if pending.input is not None]
        inputs = b"{" + b",".join(entries) + b"}"
        if kind is ProcedureKind.QUERY:
            response = await self._http.get(path, params={"batch": "1", "input": inputs.decode()})
        else:
            response = await self._http.post(
                path, params={"batch": "1"}, content=inputs, headers={"content-type": "application/json"}
            )
        try:
            envelopes = _raw_list_decoder.decode(response.content)
        except msgspec.DecodeError:
            error = error_of(response.content, response.status_code, None)
            return [error] * len(group)
        if len(envelopes) != len(group):
            error = error_of(b"", response.status_code, None)
            return [error] * len(group)
        results: list[Any] = []
        for pending, envelope in zip(group, envelopes, strict=True):
            try:
                results.append(pending.decoder.decode(envelope, response.status_code))
            except Exception as exc:
                results.append(exc)
        return results
