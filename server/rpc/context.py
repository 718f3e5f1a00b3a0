"""What a procedure handler receives besides its input: who calls, the request, and the app's services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from litestar import Request

from server.rpc.errors import ErrorCode, TRPCError

__all__ = ("Authenticator", "CallContext", "Caller")

ServicesT = TypeVar("ServicesT", covariant=True)


@dataclass(frozen=True, slots=True)
class Caller:
    """The user an API key belongs to."""

    user_id: uuid.UUID
    name: str
    is_admin: bool


class Authenticator(Protocol):
    """Resolves an API key to its user, or None for a key nobody holds.

    Called at most once per HTTP request (a batch shares it); implementations should cache, since every USER call
    pays for it.
    """

    async def authenticate(self, api_key: str) -> Caller | None: ...


@dataclass(frozen=True, slots=True)
class CallContext(Generic[ServicesT]):
    """The context of one procedure call.

    ``services`` is the object the app put in ``app.state`` (see ``RpcConfig.services_state_key``); a handler
    declares the type it needs, e.g. ``CallContext[AppServices]`` or a Protocol naming only what it uses.
    """

    path: str
    caller: Caller | None
    request: Request[Any, Any, Any]
    services: ServicesT

    @property
    def user(self) -> Caller:
        """The caller of a USER or ADMIN procedure, which the protocol has already authenticated."""
        if self.caller is None:
            raise TRPCError(ErrorCode.UNAUTHORIZED, "This procedure needs an API key")
        return self.caller
