"""``TollboothClient``: the typed async Python client of a Tollbooth server."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Self

import httpx

from tollbooth_client._transport import Transport
from tollbooth_client.namespaces import AdminNamespace, ChatNamespace, PersonasNamespace, SystemNamespace
from tollbooth_client.procedures import ClientCore

__all__ = ("TollboothClient",)


class TollboothClient:
    """``async with TollboothClient("http://127.0.0.1:8000", api_key=api_key) as client: await client.system.health()``.

    ``batching``: calls issued in the same event-loop tick (``asyncio.gather``) travel as one request of at most
    ``max_batch_size`` calls; keep it at or below the server's limit. Subscriptions reconnect up to
    ``subscription_reconnects`` times in a row, ``subscription_reconnect_delay`` seconds apart.
    ``http_transport`` replaces the network (e.g. ``httpx.ASGITransport(app)``).
    """

    system: SystemNamespace
    chat: ChatNamespace
    admin: AdminNamespace

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        path: str = "/trpc",
        batching: bool = True,
        max_batch_size: int = 16,
        max_url_length: int = 4_000,
        timeout: float = 30.0,
        subscription_reconnects: int = 5,
        subscription_reconnect_delay: float = 1.0,
        headers: Mapping[str, str] | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        all_headers = dict(headers or {})
        if api_key is not None:
            all_headers["authorization"] = f"Bearer {api_key}"
        http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + path,
            headers=all_headers,
            timeout=timeout,
            transport=http_transport,
        )
        self._transport = Transport(
            http, owns_http=True, batching=batching, max_batch_size=max_batch_size, max_url_length=max_url_length
        )
        self._core = ClientCore(self._transport, subscription_reconnects, subscription_reconnect_delay)
        self.system = SystemNamespace(self._core)
        self.chat = ChatNamespace(self._core)
        self.personas = PersonasNamespace(self._core)
        self.admin = AdminNamespace(self._core)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
