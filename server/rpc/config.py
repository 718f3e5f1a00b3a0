"""Limits and switches of the RPC protocol, and the CORS policy browser clients need."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from litestar.config.cors import CORSConfig

__all__ = ("RpcConfig", "rpc_cors_config")


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """``services_state_key`` names the ``app.state`` entry handed to handlers as ``ctx.services``.

    ``sse_max_duration_seconds`` ends a subscription's response without ``event: return``, so that the client
    reconnects (with ``Last-Event-ID``): it bounds how long one connection is held by a proxy or a worker.
    ``sse_reconnect_after_inactivity_seconds`` is sent to clients in the ``connected`` event; the ping interval must be
    shorter. ``dedup_window_seconds``: how long the answer of a de-duplicating mutation (``@implements(...,
    deduplicate=True)``) answers identical calls of the same user that carry no idempotency key (0: no de-duplication).
    ``signed_url_answer_ttl_seconds``: the longest a stored answer of a mutation bound with ``signed_urls=True`` is
    replayed (by an idempotency key or de-duplication), so that the URLs it replays have life left; None when the URLs
    handed out do not expire.
    """

    path: str = "/trpc"
    max_batch_size: int = 16
    max_body_bytes: int = 1_048_576
    services_state_key: str = "services"
    debug: bool = False
    sse_ping_interval_seconds: float | None = 10.0
    sse_max_duration_seconds: float | None = None
    sse_reconnect_after_inactivity_seconds: float | None = None
    dedup_window_seconds: float = 300.0
    signed_url_answer_ttl_seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.endswith("/"):
            raise ValueError(f"RpcConfig.path must start and not end with '/': {self.path!r}")
        if self.max_batch_size < 1:
            raise ValueError("RpcConfig.max_batch_size must be at least 1")
        if self.max_body_bytes < 1:
            raise ValueError("RpcConfig.max_body_bytes must be at least 1")
        if self.dedup_window_seconds < 0:
            raise ValueError("RpcConfig.dedup_window_seconds must not be negative (0: no de-duplication)")
        ping = self.sse_ping_interval_seconds
        inactivity = self.sse_reconnect_after_inactivity_seconds
        if ping is not None and ping <= 0:
            raise ValueError("RpcConfig.sse_ping_interval_seconds must be positive (None disables pings)")
        if inactivity is not None and (ping is None or ping >= inactivity):
            raise ValueError(
                "RpcConfig.sse_reconnect_after_inactivity_seconds needs pings more frequent than it, "
                "or clients reconnect while the stream is healthy"
            )


def rpc_cors_config(allow_origins: Sequence[str]) -> CORSConfig:
    """CORS for browser tRPC clients: the headers @trpc/client and EventSource send, and the methods tRPC uses."""
    return CORSConfig(
        allow_origins=list(allow_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["content-type", "trpc-accept", "authorization", "last-event-id", "idempotency-key"],
        expose_headers=["vary"],
        max_age=600,
    )
