"""Idempotency keys: how a client makes a mutation safe to repeat (a double click, a retry after a timeout).

Every mutation's input takes an optional ``idempotencyKey``; a single (unbatched) call may send it as the
``Idempotency-Key`` header instead. The server runs a key once per user and procedure: a repeat with the same input
gets the stored result, marked ``fromIdempotentCache: true``, without running again; a repeat with another input is
UNPROCESSABLE_CONTENT, one while the first still runs CONFLICT.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = ("IDEMPOTENCY_KEY_HEADER", "IDEMPOTENCY_KEY_MAX_LENGTH", "FromIdempotentCache", "IdempotencyKey")

IDEMPOTENCY_KEY_MAX_LENGTH: Final = 255
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"
"""The header a single call may carry its key in, quoted (``"k"``) or bare (``k``); not allowed on a batch."""

IdempotencyKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="Run this mutation at most once for this key (per user and procedure, for "
        "IDEMPOTENCY_TTL_SECONDS, a day by default): a repeat with the same input returns the stored result marked "
        "fromIdempotentCache; with another input it is UNPROCESSABLE_CONTENT; while the first still runs, CONFLICT. "
        "A new UUID per action the user means to take.",
    ),
]
FromIdempotentCache = Annotated[
    bool,
    msgspec.Meta(
        description="True when this is the stored result of an earlier call with the same idempotencyKey, "
        "returned without running (or billing) it again."
    ),
]
