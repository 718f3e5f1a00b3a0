"""Wire types and procedures of the ``system`` namespace: liveness, identity, and a resumable clock subscription.

They need no LLM, so they prove the protocol end to end (query, authenticated query, subscription) on their own.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.registry import Access, query, subscription


class HealthOutput(WireOutput, frozen=True, kw_only=True):
    status: Literal["ok", "degraded"]
    version: str
    database: Literal["ok", "unavailable"]


class WhoAmIOutput(WireOutput, frozen=True, kw_only=True):
    user_id: uuid.UUID
    name: str
    is_admin: bool


class ClockInput(WireInput, frozen=True, kw_only=True):
    """``lastEventId`` is the ``seq`` of the last event received; the server fills it from ``Last-Event-ID`` when an
    EventSource reconnects, and the clock continues after it."""

    interval_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 1000
    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    last_event_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,9}$")] | None = None


class ClockEvent(WireOutput, frozen=True, kw_only=True):
    seq: int
    at: datetime


HEALTH = query(
    "system.health",
    None,
    HealthOutput,
    Access.PUBLIC,
    "Liveness: the service version and whether the database answers.",
)
WHOAMI = query(
    "system.whoami",
    None,
    WhoAmIOutput,
    Access.USER,
    "The user the API key belongs to.",
)
CLOCK = subscription(
    "system.clock",
    ClockInput,
    ClockEvent,
    Access.USER,
    "Ticks `count` times, every `intervalMs`; each event's id is its `seq`, so a reconnect resumes after it.",
)
