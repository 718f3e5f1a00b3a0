"""A server-sent events parser, as the WHATWG EventSource specification defines the format."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ("ServerSentEvent", "parse_events")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    """``message`` when the event has no ``event:`` field."""
    data: str
    last_event_id: str | None
    """The last ``id:`` seen on the stream so far, as EventSource's ``lastEventId``."""


async def parse_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    event = ""
    data: list[str] = []
    last_event_id: str | None = None
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_event_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_event_id = value
