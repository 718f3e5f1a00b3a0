"""The tRPC v11 HTTP protocol: one request in, one response out, for every procedure.

The order of checks follows @trpc/server's ``resolveResponse``: request-level problems (content type, mixed kinds,
connection params, batch limits) answer with one error envelope; then each call is checked on its own (unknown
procedure, wrong method, access, input) and answers with its own envelope, so a batch can mix results and errors
(HTTP 207).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
from litestar import Request, Response
from litestar.response import Stream

from schemas import codec
from schemas.idempotency import IDEMPOTENCY_KEY_HEADER
from schemas.registry import Access, ProcedureKind, Registry
from server.rpc.binding import Binding, build_bindings
from server.rpc.config import RpcConfig
from server.rpc.context import Authenticator, CallContext, Caller
from server.rpc.controller import PROCEDURE_METHOD, ProcedureHost
from server.rpc.errors import ErrorCode, TRPCError, error_envelope, to_trpc_error
from server.rpc.idempotency import (
    IdempotencyStore,
    IdempotentCall,
    Outcome,
    dedup_call,
    idempotency_key,
    request_hash,
    run_once,
)
from server.rpc.inputs import (
    RequestInputs,
    decode_input,
    only_last_event_id,
    read_inputs,
    with_last_event_id,
)
from server.rpc.streaming import SSE_HEADERS, jsonl_batch, sse_events

if TYPE_CHECKING:
    from server.rpc.controller import ProcedureController

__all__ = ("Dispatcher",)

VARY: Final = "trpc-accept, accept"
_JSON: Final = "application/json"
_JSONL: Final = "application/jsonl"
_JSON_HEADERS: Final = {"vary": VARY}
_SSE_HEADERS: Final = {**SSE_HEADERS, "content-type": "text/event-stream", "vary": VARY}
_SUCCESS_PREFIX: Final = b'{"result":{"data":'
_SUCCESS_SUFFIX: Final = b"}}"
_IDEMPOTENCY_KEY: Final = IDEMPOTENCY_KEY_HEADER.lower()
_connection_params_decoder: Final = msgspec.json.Decoder(dict[str, str])
_CONNECTED_WITHOUT_RECONNECT: Final = b"{}"
"""No ``reconnectAfterInactivityMs`` for a subscription that cannot resume: a reconnect could only start it over, and
chat.streamMessage refuses that (CONFLICT on its ``requestId``), which would end a healthy but quiet stream."""


@dataclass(frozen=True, slots=True)
class _Auth:
    """The outcome of authenticating a request, once for all its calls."""

    caller: Caller | None = None
    error: TRPCError | None = None

    def caller_for(self, access: Access) -> Caller | None:
        if access is Access.PUBLIC:
            return None
        if self.error is not None:
            raise self.error
        assert self.caller is not None
        if access is Access.ADMIN and not self.caller.is_admin:
            raise TRPCError(ErrorCode.FORBIDDEN, "This procedure needs an admin API key")
        return self.caller


_NOT_NEEDED: Final = _Auth()


@dataclass(frozen=True, slots=True)
class _Call:
    """What every call of one request shares."""

    request: Request[Any, Any, Any]
    inputs: RequestInputs
    auth: _Auth
    services: Any
    is_batch: bool
    idempotency_header: str | None


class Dispatcher(ProcedureHost):
    """Serves every procedure of a registry; built once by ``rpc_router`` and shared by all its routes."""

    def __init__(
        self,
        registry: Registry,
        controllers: Sequence[type[ProcedureController]],
        authenticator: Authenticator,
        config: RpcConfig,
        idempotency: IdempotencyStore | None = None,
    ) -> None:
        self._bindings = build_bindings(registry, controllers)
        self._authenticator = authenticator
        self._config = config
        self._idempotency = idempotency
        self._encoder = codec.encoder()
        connected: dict[str, int] = {}
        if config.sse_reconnect_after_inactivity_seconds is not None:
            connected["reconnectAfterInactivityMs"] = round(config.sse_reconnect_after_inactivity_seconds * 1000)
        self._connected_event = self._encoder.encode(connected)

    def __deepcopy__(self, memo: dict[int, Any]) -> Dispatcher:
        """Litestar deep-copies routers when mounting them; the dispatcher is immutable once bound, so share it."""
        return self

    def bind_controller(self, controller: ProcedureController) -> None:
        """Point the procedures of ``controller``'s class at its methods, on the instance Litestar created."""
        for path, method_name in type(controller).handlers_by_path.items():
            binding = self._bindings.get(path)
            if binding is not None and binding.controller is type(controller):
                binding.handler = getattr(controller, method_name)

    def check_bound(self) -> None:
        unbound = sorted(path for path, binding in self._bindings.items() if binding.handler is None)
        if unbound:
            raise RuntimeError(f"controllers of these procedures were not mounted: {', '.join(unbound)}")

    async def handle(self, request: Request[Any, Any, Any], raw_path: str) -> Response[Any]:
        """Answer a request to ``/<raw_path>`` (one procedure path, or comma-separated ones with ``?batch=1``)."""
        if request.method == "HEAD":
            return Response(b"", status_code=204)
        params = request.query_params
        is_batch = params.get("batch") == "1"
        paths = raw_path.split(",") if is_batch else [raw_path]
        try:
            bindings = self._check_request(request, paths, is_batch)
            connection_params = _connection_params(params.get("connectionParams"))
            headers = request.headers
            streamed = headers.get("trpc-accept") == _JSONL
            if streamed and not is_batch:
                raise TRPCError(ErrorCode.BAD_REQUEST, "Streaming requests must be batched (you can do a batch of 1)")
            streamed = streamed or (is_batch and _JSONL in headers.get("accept", ""))
            idempotency_header = headers.get(_IDEMPOTENCY_KEY)
            if idempotency_header is not None and is_batch and _has_mutation(bindings):
                raise TRPCError(
                    ErrorCode.BAD_REQUEST,
                    "The Idempotency-Key header is for a single call: in a batch, give each mutation its own "
                    "idempotencyKey in its input",
                )
        except TRPCError as error:
            return self._error_response(error)

        needs_auth = any(b is not None and b.procedure.access is not Access.PUBLIC for b in bindings)
        call = _Call(
            request=request,
            inputs=await read_inputs(request, is_batch=is_batch),
            auth=await self._authenticate(request, connection_params) if needs_auth else _NOT_NEEDED,
            services=request.app.state.get(self._config.services_state_key),
            is_batch=is_batch,
            idempotency_header=idempotency_header,
        )
        if not is_batch:
            binding = bindings[0]
            if binding is not None and binding.procedure.kind is ProcedureKind.SUBSCRIPTION:
                return await self._subscribe(call, paths[0], binding)
            status, body = await self._run(call, paths[0], binding, 0)
            return Response(body, status_code=status, media_type=_JSON, headers=_JSON_HEADERS)
        targets = list(enumerate(zip(paths, bindings, strict=True)))
        if streamed:
            runs = [self._envelope_runner(call, path, binding, i) for i, (path, binding) in targets]
            return Stream(jsonl_batch(runs), status_code=200, media_type=_JSON, headers=_JSON_HEADERS)
        results = await asyncio.gather(*(self._run(call, path, binding, i) for i, (path, binding) in targets))
        statuses = {status for status, _ in results}
        status = statuses.pop() if len(statuses) == 1 else 207
        body = b"[" + b",".join(body for _, body in results) + b"]"
        return Response(body, status_code=status, media_type=_JSON, headers=_JSON_HEADERS)

    def _check_request(self, request: Request[Any, Any, Any], paths: list[str], is_batch: bool) -> list[Binding | None]:
        if request.method != "GET":
            content_type = request.headers.get("content-type")
            if content_type is None:
                raise TRPCError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Missing content-type header")
            if _media_type(content_type) != _JSON:
                raise TRPCError(
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f'Unsupported content-type "{content_type}": send application/json',
                )
        if is_batch and len(paths) > self._config.max_batch_size:
            raise TRPCError(
                ErrorCode.BAD_REQUEST,
                f"A batch holds at most {self._config.max_batch_size} calls; this one has {len(paths)}",
            )
        bindings = [self._bindings.get(path) for path in paths]
        kinds = list(dict.fromkeys(b.procedure.kind.value for b in bindings if b is not None))
        if len(kinds) > 1:
            raise TRPCError(ErrorCode.BAD_REQUEST, f"Cannot mix procedure types in call: {', '.join(kinds)}")
        return bindings

    async def _authenticate(self, request: Request[Any, Any, Any], connection_params: dict[str, str]) -> _Auth:
        api_key = _api_key(request.headers.get("authorization"), connection_params)
        if isinstance(api_key, TRPCError):
            return _Auth(error=api_key)
        try:
            caller = await self._authenticator.authenticate(api_key)
        except Exception as exc:
            return _Auth(error=to_trpc_error(exc))
        if caller is None:
            return _Auth(error=TRPCError(ErrorCode.UNAUTHORIZED, "Invalid API key"))
        return _Auth(caller=caller)

    def _prepare(self, call: _Call, path: str, binding: Binding | None) -> tuple[Binding, CallContext[Any]]:
        """The checks every call passes before its input is decoded, in @trpc/server's order."""
        if binding is None:
            raise TRPCError(ErrorCode.NOT_FOUND, f'No procedure found on path "{path}"')
        procedure = binding.procedure
        if call.request.method != PROCEDURE_METHOD[procedure.kind]:
            raise TRPCError(
                ErrorCode.METHOD_NOT_SUPPORTED,
                f'Unsupported {call.request.method}-request to {procedure.kind.value} procedure at path "{path}"',
            )
        if call.is_batch and procedure.kind is ProcedureKind.SUBSCRIPTION:
            raise TRPCError(ErrorCode.BAD_REQUEST, "Cannot batch subscription calls")
        caller = call.auth.caller_for(procedure.access)
        return binding, CallContext(path=path, caller=caller, request=call.request, services=call.services)

    async def _run(self, call: _Call, path: str, binding: Binding | None, index: int) -> tuple[int, bytes]:
        """One query or mutation: its HTTP status and its envelope. Never raises."""
        try:
            bound, ctx = self._prepare(call, path, binding)
            value = decode_input(path, bound.decoder, call.inputs.get(index), bound.default_input)
            once = self._idempotent_call(call, bound, ctx, value)
            if once is None:
                return 200, _SUCCESS_PREFIX + await self._output(bound, ctx, value) + _SUCCESS_SUFFIX
            assert self._idempotency is not None
            status, body = await run_once(self._idempotency, once, lambda: self._outcome(bound, ctx, value))
        except Exception as exc:
            return self._error_envelope(exc, path)
        if status != 200:
            return status, body
        return status, _SUCCESS_PREFIX + body + _SUCCESS_SUFFIX

    async def _output(self, bound: Binding, ctx: CallContext[Any], value: Any) -> bytes:
        """The handler's output, as JSON."""
        assert bound.handler is not None
        output = await bound.handler(ctx, value)
        if not isinstance(output, bound.procedure.output):
            raise TypeError(
                f"handler returned {type(output).__name__}, the procedure declares {bound.procedure.output.__name__}"
            )
        return self._encoder.encode(output)

    async def _outcome(self, bound: Binding, ctx: CallContext[Any], value: Any) -> Outcome:
        """``_output``, or the error envelope of its failure with the failure's code; raises only when cancelled."""
        try:
            return 200, await self._output(bound, ctx, value), None
        except Exception as exc:
            error = to_trpc_error(exc, ctx.path)
            return error.http_status, self._encode_error(error, ctx.path), error.code

    def _idempotent_call(self, call: _Call, bound: Binding, ctx: CallContext[Any], value: Any) -> IdempotentCall | None:
        """The key of a mutation that has one (or, de-duplicating, derives one), in its scope; None when the call
        runs without one."""
        if self._idempotency is None or bound.procedure.kind is not ProcedureKind.MUTATION:
            return None
        key = idempotency_key(value, call.idempotency_header)
        # An answer whose URLs expire is replayed only while they have life left.
        answer_ttl = self._config.signed_url_answer_ttl_seconds if bound.signed_urls else None
        if key is None:
            if not bound.deduplicate or ctx.caller is None or self._config.dedup_window_seconds == 0:
                return None
            window = self._config.dedup_window_seconds
            return dedup_call(
                ctx.caller.user_id,
                ctx.path,
                request_hash(value),
                window if answer_ttl is None else min(window, answer_ttl),
                bound.model_calls,
            )
        if ctx.caller is None:
            raise TRPCError(ErrorCode.BAD_REQUEST, "An idempotency key needs an API key: keys are kept per user")
        return IdempotentCall(
            user_id=ctx.caller.user_id,
            procedure=ctx.path,
            key=key,
            request_hash=request_hash(value),
            ttl_seconds=answer_ttl,
            model_calls=bound.model_calls,
        )

    def _error_envelope(self, exc: Exception, path: str) -> tuple[int, bytes]:
        error = to_trpc_error(exc, path)
        return error.http_status, self._encode_error(error, path)

    def _encode_error(self, error: TRPCError, path: str) -> bytes:
        return self._encoder.encode(error_envelope(error, path, debug=self._config.debug))

    def _envelope_runner(
        self, call: _Call, path: str, binding: Binding | None, index: int
    ) -> Callable[[], Awaitable[bytes]]:
        async def envelope() -> bytes:
            return (await self._run(call, path, binding, index))[1]

        return envelope

    async def _subscribe(self, call: _Call, path: str, binding: Binding) -> Response[Any]:
        events = None
        error: TRPCError | None = None
        try:
            bound, ctx = self._prepare(call, path, binding)
            raw = call.inputs.get(0)
            if bound.decoder is None and only_last_event_id(raw):
                raw = None
            last_event_id = _last_event_id(call.request) if bound.resumable else None
            if last_event_id:
                raw = with_last_event_id(raw, last_event_id)
            value = decode_input(path, bound.decoder, raw, bound.default_input)
            assert bound.handler is not None
            events = bound.handler(ctx, value)
        except Exception as exc:
            error = to_trpc_error(exc, path)
        config = self._config
        # A subscription that cannot resume is never cut short or timed out on purpose: the client would start it over.
        resumable = binding.resumable
        body = sse_events(
            events,
            error,
            path=path,
            output=binding.procedure.output,
            tracked=resumable,
            encoder=self._encoder,
            connected=self._connected_event if resumable else _CONNECTED_WITHOUT_RECONNECT,
            ping_interval=config.sse_ping_interval_seconds,
            max_duration=config.sse_max_duration_seconds if resumable else None,
            debug=config.debug,
        )
        return Stream(body, status_code=200, media_type="text/event-stream", headers=_SSE_HEADERS)

    def _error_response(self, error: TRPCError) -> Response[bytes]:
        body = self._encoder.encode(error_envelope(error, None, debug=self._config.debug))
        return Response(body, status_code=error.http_status, media_type=_JSON, headers=_JSON_HEADERS)


def _has_mutation(bindings: list[Binding | None]) -> bool:
    return any(b is not None and b.procedure.kind is ProcedureKind.MUTATION for b in bindings)


def _media_type(content_type: str) -> str:
    """``Application/JSON; charset=utf-8`` -> ``application/json``: media types are case-insensitive, parameters
    follow ``;``. Matched exactly, as @trpc/server does: ``application/jsonfoo`` is not JSON."""
    return content_type.split(";", 1)[0].strip().lower()


def _connection_params(text: str | None) -> dict[str, str]:
    """httpSubscriptionLink's ``?connectionParams=<JSON object of strings>``, how browsers authenticate SSE."""
    if text is None:
        return {}
    try:
        return _connection_params_decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise TRPCError(ErrorCode.PARSE_ERROR, "Invalid connection params shape", exc) from None
    except msgspec.DecodeError as exc:
        raise TRPCError(ErrorCode.PARSE_ERROR, "Not JSON-parsable query params", exc) from None


def _api_key(authorization: str | None, connection_params: dict[str, str]) -> str | TRPCError:
    """The key from ``Authorization: Bearer <key>``, else from connectionParams (``apiKey`` or ``authorization``)."""
    if authorization is None:
        authorization = connection_params.get("authorization")
        if authorization is None and (key := connection_params.get("apiKey")):
            return key
    if not authorization:
        return TRPCError(ErrorCode.UNAUTHORIZED, "Missing API key: send `Authorization: Bearer <key>`")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return TRPCError(ErrorCode.UNAUTHORIZED, "Unsupported authorization: send `Authorization: Bearer <key>`")
    return key


def _last_event_id(request: Request[Any, Any, Any]) -> str | None:
    """Where EventSource (header) or a polyfill without header support (query) puts the id to resume after."""
    params = request.query_params
    return request.headers.get("last-event-id") or params.get("lastEventId") or params.get("Last-Event-Id") or None
