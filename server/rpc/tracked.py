"""Subscription events that carry an id, so that a client can resume after the last one it saw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ("Tracked", "tracked")

EventT = TypeVar("EventT")


@dataclass(frozen=True, slots=True)
class Tracked(Generic[EventT]):
    """An event sent with ``id: <id>``; EventSource returns the last id as ``Last-Event-ID`` when it reconnects."""

    id: str
    data: EventT


def tracked(id: str, data: EventT) -> Tracked[EventT]:
    """tRPC's ``tracked(id, data)``: yield this from a subscription handler to make the event resumable."""
    if not id or "\n" in id or "\r" in id:
        raise ValueError(f"an event id must be a non-empty single line: {id!r}")
    return Tracked(id, data)
