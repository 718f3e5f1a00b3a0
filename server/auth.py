"""API-key authentication against the ``users`` table.

A key's user is cached for ``ttl`` seconds (``CACHE_SECONDS`` unless told), keyed by the key itself, so a client's
repeated calls cost neither a hash nor a query; a revoked, replaced or deleted key stops working within ``ttl``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Final

from server.database import Database
from server.rpc.context import Caller
from server.users import API_KEY_PREFIX, hash_api_key

_LOOKUP: Final = "SELECT id, name, is_admin FROM users WHERE api_key_hash = $1"
MAX_KEY_LENGTH: Final = 128
CACHE_SECONDS: Final = 30.0


class DatabaseAuthenticator:
    def __init__(self, db: Database, *, ttl: float = CACHE_SECONDS, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[Caller | None, float]] = OrderedDict()

    async def authenticate(self, api_key: str) -> Caller | None:
        if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > MAX_KEY_LENGTH:
            return None
        now = time.monotonic()
        cached = self._cache.get(api_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await self._db.fetchrow(_LOOKUP, hash_api_key(api_key))
        caller = None if row is None else Caller(user_id=row["id"], name=row["name"], is_admin=row["is_admin"])
        self._cache[api_key] = (caller, now + self._ttl)
        self._cache.move_to_end(api_key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return caller
