"""The procedure registry: every procedure's path, kind, access level and wire types.

The server binds one handler to each entry; the Python client and the TypeScript ``AppRouter`` are derived from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar, cast, overload

import msgspec

InputT = TypeVar("InputT", bound=msgspec.Struct | None)
OutputT = TypeVar("OutputT", bound=msgspec.Struct)
_StructT = TypeVar("_StructT", bound=msgspec.Struct)
_FirstT = TypeVar("_FirstT", bound=msgspec.Struct)
_SecondT = TypeVar("_SecondT", bound=msgspec.Struct)

LAST_EVENT_ID: Final = "lastEventId"
"""The input field, in wire spelling, through which a subscription resumes after the last event a client received."""


class ProcedureKind(StrEnum):
    QUERY = "query"
    MUTATION = "mutation"
    SUBSCRIPTION = "subscription"


class Access(StrEnum):
    """Who may call a procedure: anyone, any user with a valid key, or an admin."""

    PUBLIC = "public"
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Procedure(Generic[InputT, OutputT]):
    """One procedure of the contract.

    ``input`` is the Struct the call takes (``None``: the call takes no input, and the procedure is a
    ``Procedure[None, ...]``); for a subscription ``output`` is the type of each event it emits, which may be a
    tagged union of Structs (``one_of``).
    """

    path: str
    kind: ProcedureKind
    input: type[InputT] | None
    output: type[OutputT]
    access: Access
    description: str

    @property
    def namespace(self) -> str:
        return self.path.partition(".")[0]

    @property
    def name(self) -> str:
        return self.path.partition(".")[2]

    @property
    def resumable(self) -> bool:
        """A subscription whose input has ``lastEventId``: each event carries an id (SSE ``id:``; ``{id, data}`` in
        @trpc/client), and a client that reconnects resumes after the last id it received."""
        input_type = self.input
        return (
            self.kind is ProcedureKind.SUBSCRIPTION
            and input_type is not None
            and issubclass(input_type, msgspec.Struct)
            and any(f.encode_name == LAST_EVENT_ID for f in msgspec.structs.fields(input_type))
        )


def all_optional(procedure: Procedure[Any, Any]) -> bool:
    """Whether ``procedure`` takes an input whose fields all have defaults: a caller may then send no input at all."""
    input_type = procedure.input
    return input_type is not None and not any(f.required for f in msgspec.structs.fields(input_type))


def one_of(first: type[_FirstT], second: type[_SecondT]) -> type[_FirstT | _SecondT]:
    """Events of two kinds, told apart on the wire by their msgspec tag (both Structs set ``tag`` and ``tag_field``).

    The union serves msgspec decoders, JSON schemas and ``isinstance`` as a Struct class would; this only gives it the
    static type ``type[A | B]`` that ``Procedure.output`` declares, so that clients infer ``A | B`` for each event.
    """
    return cast("type[_FirstT | _SecondT]", first | second)


# One overload pair per kind so that a procedure without input is typed ``Procedure[None, Output]``: clients and
# handlers then know statically that the call takes no argument.
@overload
def query(
    path: str, input: None, output: type[OutputT], access: Access, description: str
) -> Procedure[None, OutputT]: ...
@overload
def query(
    path: str, input: type[_StructT], output: type[OutputT], access: Access, description: str
) -> Procedure[_StructT, OutputT]: ...
def query(
    path: str, input: type[Any] | None, output: type[OutputT], access: Access, description: str
) -> Procedure[Any, OutputT]:
    return Procedure(path, ProcedureKind.QUERY, input, output, access, description)


@overload
def mutation(
    path: str, input: None, output: type[OutputT], access: Access, description: str
) -> Procedure[None, OutputT]: ...
@overload
def mutation(
    path: str, input: type[_StructT], output: type[OutputT], access: Access, description: str
) -> Procedure[_StructT, OutputT]: ...
def mutation(
    path: str, input: type[Any] | None, output: type[OutputT], access: Access, description: str
) -> Procedure[Any, OutputT]:
    return Procedure(path, ProcedureKind.MUTATION, input, output, access, description)


@overload
def subscription(
    path: str, input: None, output: type[OutputT], access: Access, description: str
) -> Procedure[None, OutputT]: ...
@overload
def subscription(
    path: str, input: type[_StructT], output: type[OutputT], access: Access, description: str
) -> Procedure[_StructT, OutputT]: ...
def subscription(
    path: str, input: type[Any] | None, output: type[OutputT], access: Access, description: str
) -> Procedure[Any, OutputT]:
    return Procedure(path, ProcedureKind.SUBSCRIPTION, input, output, access, description)


@dataclass(frozen=True, slots=True)
class Registry:
    """An ordered, duplicate-free collection of procedures, indexed by path."""

    procedures: tuple[Procedure[Any, Any], ...]
    _by_path: dict[str, Procedure[Any, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        paths = [p.path for p in self.procedures]
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise ValueError(f"duplicate procedure paths: {', '.join(duplicates)}")
        malformed = sorted(p for p in paths if not p.partition(".")[2] or "," in p or "/" in p)
        if malformed:
            raise ValueError(f"procedure paths must be 'namespace.name' without ',' or '/': {', '.join(malformed)}")
        object.__setattr__(self, "_by_path", {p.path: p for p in self.procedures})

    def get(self, path: str) -> Procedure[Any, Any] | None:
        return self._by_path.get(path)

    def __iter__(self) -> Iterator[Procedure[Any, Any]]:
        return iter(self.procedures)

    def __len__(self) -> int:
        return len(self.procedures)
