"""Typed client methods made from registry procedures: one line per procedure in a ``Namespace``.

``query(PROC)``, ``mutation(PROC)`` and ``subscription(PROC)`` are descriptors whose type carries the procedure's
input and output, so ``await client.chat.send_message(SendMessageInput(...))`` is checked by mypy and returns
``SendMessageOutput``; a procedure without input gives a method without parameters. The attribute name must be the
procedure name in snake_case, checked when the class is created.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, Self, TypeVar, overload

import msgspec

from schemas import codec
from schemas.registry import Procedure, ProcedureKind
from tollbooth_client._envelope import EnvelopeDecoder
from tollbooth_client._transport import Transport
from tollbooth_client.subscription import Subscription

__all__ = ("Namespace", "mutation", "query", "subscription")

InputT = TypeVar("InputT", bound=msgspec.Struct)
OutputT = TypeVar("OutputT", bound=msgspec.Struct)

_encoder: Final = codec.encoder()


@dataclass(frozen=True, slots=True)
class ClientCore:
    """What the methods of every namespace share."""

    transport: Transport
    max_reconnects: int
    reconnect_delay: float


class Namespace:
    """Base of the client's namespaces (``client.system``, ``client.chat``...): set ``namespace``, list procedures."""

    namespace: ClassVar[str]

    def __init__(self, core: ClientCore) -> None:
        self._core = core

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            if isinstance(value, _Method):
                value.check_name(cls, name)


class _Method:
    kind: ClassVar[ProcedureKind]

    def __init__(self, procedure: Procedure[Any, Any]) -> None:
        if procedure.kind is not self.kind:
            raise TypeError(f"{procedure.path} is a {procedure.kind.value}, not a {self.kind.value}")
        self.procedure = procedure
        self._envelope = EnvelopeDecoder(procedure.output, procedure.path)
        self._event = codec.decoder(procedure.output)

    def check_name(self, owner: type[Namespace], name: str) -> None:
        namespace = getattr(owner, "namespace", None)
        if namespace != self.procedure.namespace or _camel(name) != self.procedure.name:
            raise TypeError(
                f"{owner.__qualname__}.{name} cannot be {self.procedure.path!r}: "
                f"expected {self.procedure.namespace}.{_snake(self.procedure.name)} "
                f"in a namespace class with namespace = {self.procedure.namespace!r}"
            )

    def _encode(self, input: msgspec.Struct | None) -> bytes | None:
        expected = self.procedure.input
        if expected is None:
            return None
        if not isinstance(input, expected):
            raise TypeError(f"{self.procedure.path} takes {expected.__name__}, not {type(input).__name__}")
        return _encoder.encode(input)

    async def _call(self, namespace: Namespace, input: msgspec.Struct | None) -> Any:
        core = namespace._core
        return await core.transport.call(self.kind, self.procedure.path, self._encode(input), self._envelope)

    def _subscribe(self, namespace: Namespace, input: msgspec.Struct | None) -> Subscription[Any]:
        core = namespace._core
        return Subscription(
            core.transport,
            self.procedure.path,
            self._encode(input),
            self._event,
            # Reconnecting would start a subscription that cannot resume over, repeating what it did (a model call).
            max_reconnects=core.max_reconnects if self.procedure.resumable else 0,
            reconnect_delay=core.reconnect_delay,
        )


class _Call(_Method, Generic[InputT, OutputT]):
    @overload
    def __get__(self, namespace: None, owner: type[Namespace]) -> Self: ...
    @overload
    def __get__(
        self, namespace: Namespace, owner: type[Namespace]
    ) -> Callable[[InputT], Coroutine[Any, Any, OutputT]]: ...
    def __get__(self, namespace: Namespace | None, owner: type[Namespace]) -> Any:
        if namespace is None:
            return self

        async def call(input: InputT) -> OutputT:
            return await self._call(namespace, input)  # type: ignore[no-any-return]

        return call


class _CallWithoutInput(_Method, Generic[OutputT]):
    @overload
    def __get__(self, namespace: None, owner: type[Namespace]) -> Self: ...
    @overload
    def __get__(self, namespace: Namespace, owner: type[Namespace]) -> Callable[[], Coroutine[Any, Any, OutputT]]: ...
    def __get__(self, namespace: Namespace | None, owner: type[Namespace]) -> Any:
        if namespace is None:
            return self

        async def call() -> OutputT:
            return await self._call(namespace, None)  # type: ignore[no-any-return]

        return call


class _Query(_Call[InputT, OutputT]):
    kind = ProcedureKind.QUERY


class _QueryWithoutInput(_CallWithoutInput[OutputT]):
    kind = ProcedureKind.QUERY


class _Mutation(_Call[InputT, OutputT]):
    kind = ProcedureKind.MUTATION


class _MutationWithoutInput(_CallWithoutInput[OutputT]):
    kind = ProcedureKind.MUTATION


class _Subscription(_Method, Generic[InputT, OutputT]):
    kind = ProcedureKind.SUBSCRIPTION

    @overload
    def __get__(self, namespace: None, owner: type[Namespace]) -> Self: ...
    @overload
    def __get__(self, namespace: Namespace, owner: type[Namespace]) -> Callable[[InputT], Subscription[OutputT]]: ...
    def __get__(self, namespace: Namespace | None, owner: type[Namespace]) -> Any:
        if namespace is None:
            return self
        return lambda input: self._subscribe(namespace, input)


class _SubscriptionWithoutInput(_Method, Generic[OutputT]):
    kind = ProcedureKind.SUBSCRIPTION

    @overload
    def __get__(self, namespace: None, owner: type[Namespace]) -> Self: ...
    @overload
    def __get__(self, namespace: Namespace, owner: type[Namespace]) -> Callable[[], Subscription[OutputT]]: ...
    def __get__(self, namespace: Namespace | None, owner: type[Namespace]) -> Any:
        if namespace is None:
            return self
        return lambda: self._subscribe(namespace, None)


@overload
def query(procedure: Procedure[None, OutputT]) -> _QueryWithoutInput[OutputT]: ...
@overload
def query(procedure: Procedure[InputT, OutputT]) -> _Query[InputT, OutputT]: ...
def query(procedure: Procedure[Any, Any]) -> _Method:
    return _QueryWithoutInput(procedure) if procedure.input is None else _Query(procedure)


@overload
def mutation(procedure: Procedure[None, OutputT]) -> _MutationWithoutInput[OutputT]: ...
@overload
def mutation(procedure: Procedure[InputT, OutputT]) -> _Mutation[InputT, OutputT]: ...
def mutation(procedure: Procedure[Any, Any]) -> _Method:
    return _MutationWithoutInput(procedure) if procedure.input is None else _Mutation(procedure)


@overload
def subscription(procedure: Procedure[None, OutputT]) -> _SubscriptionWithoutInput[OutputT]: ...
@overload
def subscription(procedure: Procedure[InputT, OutputT]) -> _Subscription[InputT, OutputT]: ...
def subscription(procedure: Procedure[Any, Any]) -> _Method:
    return _SubscriptionWithoutInput(procedure) if procedure.input is None else _Subscription(procedure)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()
