"""The answer the simulator gives when no script is queued: deterministic, so offline runs are repeatable.

Token counts are estimated as ``ceil(characters / 4)`` per message (system prompt included) for the prompt and
for the reply; no cache tokens, no reasoning. The rule is crude on purpose: it is easy to recompute in a test.
"""

from __future__ import annotations

from typing import Final

REPLY_PREFIX: Final = "Simulated reply to: "
QUOTED_CHARACTERS: Final = 60


def estimate_tokens(text: str) -> int:
    return -(-len(text) // 4)


def default_reply(last_user_text: str) -> str:
    return REPLY_PREFIX + last_user_text[:QUOTED_CHARACTERS]


def split_for_stream(text: str) -> list[str]:
    """Cut a reply into word-sized content chunks (each word keeps its trailing space), like a token stream."""
    pieces: list[str] = []
    start = 0
    length = len(text)
    while start < length:
        end = text.find(" ", start)
        if end == -1:
            pieces.append(text[start:])
            break
        end += 1
        while end < length and text[end] == " ":
            end += 1
        pieces.append(text[start:end])
        start = end
    return pieces
