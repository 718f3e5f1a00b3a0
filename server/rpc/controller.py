"""Namespace controllers: a Litestar ``Controller`` whose methods are bound to registry procedures.

``@implements(PROCEDURE)`` marks a method as the handler of a procedure; mypy checks the method's input and output
types against the procedure's. For each marked method the class gets two Litestar routes at ``/<procedure path>``:
the documented one (the procedure's HTTP method, operation id = procedure path) and an undocumented one for every
other method, so that a wrong method still gets a tRPC error. Both delegate to the shared protocol.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Coroutine
from types import NoneType, UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    Generic,
    Protocol,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

from litestar import Controller, Request, Response, route
from litestar.enums import HttpMethod

from schemas.registry import InputT, OutputT, Procedure, ProcedureKind
from server.rpc.context import CallContext
from server.rpc.openapi import operation_class_for
from server.rpc.tracked import Tracked

if TYPE_CHECKING:
    from litestar.router import Router

__all__ = ("ProcedureController", "implements")

_PROCEDURE_ATTR: Final = "__rpc_procedure__"
_DEDUPLICATE_ATTR: Final = "__rpc_deduplicate__"
_MODEL_CALLS_ATTR: Final = "__rpc_model_calls__"
_SIGNED_URLS_ATTR: Final = "__rpc_signed_urls__"
DISPATCHER_OPT_KEY: Final = "tollbooth.rpc.dispatcher"
ALL_METHODS: Final = (
    HttpMethod.GET,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
    HttpMethod.HEAD,
    HttpMethod.TRACE,
)
"""Every method Litestar routes, except OPTIONS (left to Litestar's automatic handler: ``204`` with ``Allow``, and
CORS preflights). CONNECT is not among Litestar's methods: it cannot be routed, so it gets Litestar's own 405."""
PROCEDURE_METHOD: Final = {
    ProcedureKind.QUERY: HttpMethod.GET,
    ProcedureKind.MUTATION: HttpMethod.POST,
    ProcedureKind.SUBSCRIPTION: HttpMethod.GET,
}


class ProcedureHost(Protocol):
    """What a controller needs of the protocol that serves it (``Dispatcher``), so that it need not import it."""

    async def handle(self, request: Request[Any, Any, Any], raw_path: str) -> Response[Any]: ...

    def bind_controller(self, controller: ProcedureController) -> None: ...


SelfT = TypeVar("SelfT")
ServicesT = TypeVar("ServicesT")


class _Implements(Generic[InputT, OutputT]):
    def __init__(
        self, procedure: Procedure[InputT, OutputT], deduplicate: bool, model_calls: int | None, signed_urls: bool
    ) -> None:
        self.procedure = procedure
        self.deduplicate = deduplicate
        self.model_calls = model_calls
        self.signed_urls = signed_urls

    @overload
    def __call__(
        self, handler: Callable[[SelfT, CallContext[ServicesT], InputT], Coroutine[Any, Any, OutputT]]
    ) -> Callable[[SelfT, CallContext[ServicesT], InputT], Coroutine[Any, Any, OutputT]]: ...
    @overload
    def __call__(
        self,
        handler: Callable[[SelfT, CallContext[ServicesT], InputT], AsyncIterator[OutputT | Tracked[OutputT]]],
    ) -> Callable[[SelfT, CallContext[ServicesT], InputT], AsyncIterator[OutputT | Tracked[OutputT]]]: ...
    def __call__(self, handler: Any) -> Any:
        setattr(handler, _PROCEDURE_ATTR, self.procedure)
        setattr(handler, _DEDUPLICATE_ATTR, self.deduplicate)
        setattr(handler, _MODEL_CALLS_ATTR, self.model_calls)
        setattr(handler, _SIGNED_URLS_ATTR, self.signed_urls)
        return handler


def implemented_procedure(handler: object) -> Procedure[Any, Any] | None:
    """The procedure ``handler`` was bound to with ``@implements``, if any."""
    procedure = getattr(handler, _PROCEDURE_ATTR, None)
    return procedure if isinstance(procedure, Procedure) else None


def deduplicates(handler: object) -> bool:
    """Whether ``handler`` was bound with ``@implements(..., deduplicate=True)``."""
    return getattr(handler, _DEDUPLICATE_ATTR, False) is True


def answers_with_signed_urls(handler: object) -> bool:
    """Whether ``handler`` was bound with ``@implements(..., signed_urls=True)``."""
    return getattr(handler, _SIGNED_URLS_ATTR, False) is True


def sequential_model_calls(handler: object) -> int | None:
    """The ``model_calls`` ``handler`` was bound with, if any."""
    calls = getattr(handler, _MODEL_CALLS_ATTR, None)
    return calls if isinstance(calls, int) else None


def implements(
    procedure: Procedure[InputT, OutputT],
    *,
    deduplicate: bool = False,
    model_calls: int | None = None,
    signed_urls: bool = False,
) -> _Implements[InputT, OutputT]:
    """Bind the decorated method to ``procedure``.

    ``deduplicate`` (mutations only): an identical call of the same user without an idempotency key, within the
    de-duplication window (``RpcConfig.dedup_window_seconds``), is answered from the first, as a repeat of an
    idempotency key is (``server.rpc.idempotency``). ``model_calls`` (mutations): the most model calls the handler
    makes one after another, when more than a structured answer's two: an idempotency key's lease must outlast them.
    ``signed_urls`` (mutations): the output carries URLs that expire (presigned storage URLs), so a stored answer is
    replayed only while they have life left (``RpcConfig.signed_url_answer_ttl_seconds``); after that a repeat runs
    again.

    A query or mutation handler is ``async def name(self, ctx: CallContext[S], input: In) -> Out``; a subscription
    handler is an async generator yielding ``Tracked[Out]`` (see ``tracked``) when it is resumable (its input takes
    ``lastEventId``), else ``Out``; ``input: None`` when the procedure takes none. The method stays a plain method,
    callable directly in unit tests.
    """
    if deduplicate and procedure.kind is not ProcedureKind.MUTATION:
        raise TypeError(f"{procedure.path!r}: only a mutation can be de-duplicated")
    return _Implements(procedure, deduplicate, model_calls, signed_urls)


class ProcedureController(Controller):
    """Base of the namespace controllers (``SystemController``, ``ChatController``...).

    Subclasses set ``namespace`` and implement procedures of that namespace with ``@implements``. They are mounted
    with ``rpc_router``, which checks at start-up that every registry procedure has exactly one handler whose
    signature matches it.
    """

    namespace: ClassVar[str]
    path = "/"
    handlers_by_path: ClassVar[dict[str, str]] = {}
    """Procedure path -> name of the method implementing it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        namespace = getattr(cls, "namespace", None)
        if not isinstance(namespace, str) or not namespace:
            raise TypeError(f"{cls.__qualname__} must set `namespace` to its procedures' namespace")
        handlers = dict(cls.handlers_by_path)
        for name, value in list(vars(cls).items()):
            procedure = implemented_procedure(value)
            if procedure is None:
                continue
            if procedure.namespace != namespace:
                raise TypeError(
                    f"{cls.__qualname__}.{name} implements {procedure.path!r}, "
                    f"outside the controller's namespace {namespace!r}"
                )
            if procedure.path in handlers and handlers[procedure.path] != name:
                raise TypeError(
                    f"{procedure.path!r} has two handlers in {cls.__qualname__}: {handlers[procedure.path]} and {name}"
                )
            handlers[procedure.path] = name
            _add_routes(cls, name, procedure)
        cls.handlers_by_path = handlers

    def __init__(self, owner: Router) -> None:
        super().__init__(owner)
        dispatcher = owner.opt.get(DISPATCHER_OPT_KEY)
        if dispatcher is None:
            raise RuntimeError(f"{type(self).__qualname__} must be mounted with server.rpc.rpc_router()")
        self.dispatcher: ProcedureHost = dispatcher
        dispatcher.bind_controller(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> ProcedureController:
        """Litestar deep-copies routers when it mounts them; a controller holds no per-copy state, so share it."""
        return self


def _add_routes(cls: type[ProcedureController], name: str, procedure: Procedure[Any, Any]) -> None:
    path = procedure.path

    async def endpoint(self: ProcedureController, request: Request[Any, Any, Any]) -> Response[Any]:
        return await self.dispatcher.handle(request, path)

    endpoint.__name__ = endpoint.__qualname__ = f"rpc_{name}"
    method = PROCEDURE_METHOD[procedure.kind]
    documented = route(
        f"/{path}",
        http_method=[method],
        operation_id=path,
        operation_class=operation_class_for(procedure),
        summary=path,
        description=procedure.description,
        tags=[procedure.namespace],
        status_code=200,
    )(endpoint)
    other_methods = route(
        f"/{path}",
        http_method=[m for m in ALL_METHODS if m != method],
        include_in_schema=False,
        status_code=200,
    )(endpoint)
    setattr(cls, f"_rpc_route_{name}", documented)
    setattr(cls, f"_rpc_other_methods_{name}", other_methods)


def check_handler_signature(controller: type[ProcedureController], name: str, procedure: Procedure[Any, Any]) -> None:
    """Fail at start-up when a handler cannot serve its procedure: wrong kind of function, wrong input or output.

    mypy checks the same statically; this catches what it cannot see (``Any``, missing annotations, a subscription
    written as a coroutine).
    """
    handler = getattr(controller, name)
    where = f"{controller.__qualname__}.{name} (implements {procedure.path!r})"
    try:
        hints = get_type_hints(handler)
    except Exception as exc:
        raise TypeError(f"{where}: cannot resolve its annotations: {exc}") from exc
    parameters = list(inspect.signature(handler).parameters.values())
    if len(parameters) != 3 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        raise TypeError(f"{where}: must be `(self, ctx: CallContext[...], input: ...)`")
    _, ctx_parameter, input_parameter = parameters
    ctx_hint = hints.get(ctx_parameter.name)
    if ctx_hint is not CallContext and get_origin(ctx_hint) is not CallContext:
        raise TypeError(f"{where}: `{ctx_parameter.name}` must be annotated CallContext[...], not {ctx_hint!r}")
    expected_input = NoneType if procedure.input is None else procedure.input
    if hints.get(input_parameter.name) is not expected_input:
        raise TypeError(
            f"{where}: `{input_parameter.name}` must be annotated {_name(expected_input)}, "
            f"not {_name(hints.get(input_parameter.name))}"
        )
    returned = hints.get("return")
    output = procedure.output
    if procedure.kind is ProcedureKind.SUBSCRIPTION:
        if not inspect.isasyncgenfunction(handler):
            raise TypeError(f"{where}: a subscription handler must be an async generator (use `yield`)")
        event_args = get_args(returned)
        event = f"Tracked[{_name(output)}]" if procedure.resumable else _name(output)
        if get_origin(returned) not in (AsyncIterator, AsyncGenerator, AsyncIterable) or (
            not event_args or not _is_event_type(event_args[0], output, tracked=procedure.resumable)
        ):
            why = "its input takes lastEventId" if procedure.resumable else "its input has no lastEventId"
            raise TypeError(f"{where}: must return AsyncIterator[{event}] ({why}), not {_name(returned)}")
    else:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"{where}: a {procedure.kind.value} handler must be `async def`")
        if returned is not output:
            raise TypeError(f"{where}: must return {_name(output)}, not {_name(returned)}")


def _is_event_type(annotation: object, output: type[Any], *, tracked: bool) -> bool:
    """``Tracked[Out]`` for a resumable subscription, ``Out`` for any other. Unions compare by their members."""
    if tracked:
        return get_origin(annotation) is Tracked and get_args(annotation) == (output,)
    return annotation == output


def _name(annotation: object) -> str:
    if annotation is NoneType:
        return "None"
    if isinstance(annotation, UnionType):
        return " | ".join(_name(member) for member in get_args(annotation))
    name = getattr(get_origin(annotation) or annotation, "__name__", None) or repr(annotation)
    arguments = get_args(annotation)
    return f"{name}[{', '.join(_name(a) for a in arguments)}]" if arguments else name
