"""The procedure registry: every procedure's path, kind, access level and wire types.

The server binds one handler to each entry; the Python client and the TypeScript ``AppRouter`` are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import msgspec

InputT = TypeVar("InputT", bound=msgspec.Struct)
OutputT = TypeVar("OutputT", bound=msgspec.Struct)


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

    ``input`` is the Struct the call takes (``None``: the call takes no input); for a subscription ``output`` is the
    type of each event it emits.
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


def query(
    path: str, input: type[InputT] | None, output: type[OutputT], access: Access, description: str
) -> Procedure[InputT, OutputT]:
    return Procedure(path, ProcedureKind.QUERY, input, output, access, description)


def mutation(
    path: str, input: type[InputT] | None, output: type[OutputT], access: Access, description: str
) -> Procedure[InputT, OutputT]:
    return Procedure(path, ProcedureKind.MUTATION, input, output, access, description)


def subscription(
    path: str, input: type[InputT] | None, output: type[OutputT], access: Access, description: str
) -> Procedure[InputT, OutputT]:
    return Procedure(path, ProcedureKind.SUBSCRIPTION, input, output, access, description)


@dataclass(frozen=True, slots=True)
class Registry:
    """An ordered, duplicate-free collection of procedures."""

    procedures: tuple[Procedure[Any, Any], ...]

    def __post_init__(self) -> None:
        paths = [p.path for p in self.procedures]
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise ValueError(f"duplicate procedure paths: {', '.join(duplicates)}")

    def get(self, path: str) -> Procedure[Any, Any] | None:
        return next((p for p in self.procedures if p.path == path), None)
