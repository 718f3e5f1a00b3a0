"""Console sign-in: an admin API key exchanged for a signed, expiring session cookie; CSRF tokens bound to it.

The cookie is ``<session id>.<expiry, Unix seconds>.<signature>``: the signature is the hex HMAC-SHA256, keyed by
``CONSOLE_SECRET``, of ``"session." + id + "." + expiry``. A cookie is checked in this order, and refused at the first
failure: its signature (a forged or altered cookie costs no query), its expiry, then its row in ``console_sessions``
(keyed by the SHA-256 of the id), which must still be unexpired and belong to an admin whose key is the one the
session was opened with. Signing out deletes the row, so a copied cookie stops working at once; so does revoking or
rotating the admin's key.

A state-changing form carries ``csrf_token``: the HMAC of ``"csrf." + session id``. An attacker's page cannot read it
(the cookie is HttpOnly and the pages are same-origin), and a token is worth nothing with another session.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Final

from server.auth import MAX_KEY_LENGTH
from server.database import Database
from server.users import API_KEY_PREFIX, hash_api_key

__all__ = ("COOKIE_NAME", "Admin", "ConsoleSessions", "NewSession")

COOKIE_NAME: Final = "tollbooth_console"

_ADMIN_BY_KEY: Final = "SELECT id, name FROM users WHERE api_key_hash = $1 AND is_admin"
_OPEN: Final = """
INSERT INTO console_sessions (id, user_id, api_key_hash, expires_at) VALUES ($1, $2, $3, $4)
"""
_PRUNE: Final = "DELETE FROM console_sessions WHERE expires_at < now()"
_LOOKUP: Final = """
SELECT u.id, u.name
FROM console_sessions s
JOIN users u ON u.id = s.user_id AND u.api_key_hash = s.api_key_hash AND u.is_admin
WHERE s.id = $1 AND s.expires_at > now()
"""
_CLOSE: Final = "DELETE FROM console_sessions WHERE id = $1"


@dataclass(frozen=True, slots=True)
class Admin:
    """The admin a console request is signed in as; ``session_id`` binds the CSRF token."""

    user_id: uuid.UUID
    name: str
    session_id: str
    csrf_token: str


@dataclass(frozen=True, slots=True)
class NewSession:
    cookie: str
    max_age_seconds: int


class ConsoleSessions:
    """Opens, checks and closes console sessions. ``secret`` None: a random key for this process only."""

    def __init__(self, db: Database, *, secret: str | None, ttl_seconds: float) -> None:
        self._db = db
        self._key = (secret or secrets.token_hex(32)).encode()
        self.ephemeral_secret = secret is None
        self._ttl_seconds = ttl_seconds

    def _sign(self, purpose: str, *parts: str) -> str:
        message = ".".join((purpose, *parts)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def csrf_token(self, session_id: str) -> str:
        return self._sign("csrf", session_id)

    def csrf_valid(self, admin: Admin, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), admin.csrf_token.encode())

    async def sign_in(self, api_key: str) -> NewSession | None:
        """A session for the admin whose key this is; None for an unknown, revoked or non-admin key."""
        api_key = api_key.strip()
        if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > MAX_KEY_LENGTH:
            return None
        key_hash = hash_api_key(api_key)
        row = await self._db.fetchrow(_ADMIN_BY_KEY, key_hash)
        if row is None:
            return None
        session_id = secrets.token_urlsafe(32)
        expires = int(time.time() + self._ttl_seconds)
        await self._db.execute(_PRUNE)
        await self._db.execute(
            _OPEN,
            _row_id(session_id),
            row["id"],
            key_hash,
            datetime.datetime.fromtimestamp(expires, datetime.UTC),
        )
        cookie = f"{session_id}.{expires}.{self._sign('session', session_id, str(expires))}"
        return NewSession(cookie=cookie, max_age_seconds=max(1, round(self._ttl_seconds)))

    def _session_id(self, cookie: str | None) -> str | None:
        """The session id of a well-signed, unexpired cookie."""
        if not cookie or cookie.count(".") != 2:
            return None
        session_id, expires, signature = cookie.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign("session", session_id, expires).encode()):
            return None
        if not expires.isdigit() or int(expires) <= time.time():
            return None
        return session_id

    async def admin(self, cookie: str | None) -> Admin | None:
        """Who the cookie signs in, or None (forged, expired, signed out, key revoked, no longer an admin)."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        row = await self._db.fetchrow(_LOOKUP, _row_id(session_id))
        if row is None:
            return None
        return Admin(user_id=row["id"], name=row["name"], session_id=session_id, csrf_token=self.csrf_token(session_id))

    async def sign_out(self, admin: Admin) -> None:
        await self._db.execute(_CLOSE, _row_id(admin.session_id))


def _row_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
