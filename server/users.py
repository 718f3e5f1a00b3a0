"""Users and their API keys. Only a SHA-256 hash of a key is stored; the key itself is shown once, when it is made.

Keys are 256 random bits, so a fast unsalted hash is the right tool: there is nothing to brute-force. A key is revoked
by replacing its hash with a marker no SHA-256 hex digest can equal, so the row, and the conversations and usage it
owns, stay; ``rotate_key`` gives the user a new key (a revoked user included). A key's fingerprint, the first digits
of its hash, tells keys apart in listings without showing them.

Names are unique unless a duplicate is asked for (``allow_duplicate``), so a user can be named on the command line;
an id always works.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec

from server.tables import User

API_KEY_PREFIX: Final = "tb_"
FINGERPRINT_DIGITS: Final = 12
MAX_NAME_LENGTH: Final = 200
_REVOKED: Final = "revoked:"


class UserError(ValueError):
    """A user operation that cannot be done as asked; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class NewUser:
    """A user with a key just made: the only time ``api_key`` is known."""

    id: uuid.UUID
    name: str
    is_admin: bool
    api_key: str

    @property
    def key_fingerprint(self) -> str:
        return key_fingerprint(hash_api_key(self.api_key))


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A stored user, without its key: ``key_fingerprint`` is None when the key is revoked."""

    id: uuid.UUID
    name: str
    is_admin: bool
    created_at: datetime
    key_fingerprint: str | None


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_fingerprint(api_key_hash: str) -> str:
    """The first ``FINGERPRINT_DIGITS`` hex digits of a key's SHA-256: ``printf %s "$KEY" | sha256sum | cut -c1-12``."""
    return api_key_hash[:FINGERPRINT_DIGITS]


async def create_user(name: str, *, is_admin: bool = False, allow_duplicate: bool = False) -> NewUser:
    """Create a user with a new key. Raises ``UserError`` for an empty or too long name, and for a name another user
    has unless ``allow_duplicate``."""
    name = _valid_name(name)
    api_key = new_api_key()
    user = User(name=name, is_admin=is_admin, api_key_hash=hash_api_key(api_key))
    async with User._meta.db.transaction():
        # Writers of users wait for each other here, so two creations of one name cannot both find it free; readers
        # (authentication) and the foreign-key checks of conversations do not wait.
        await User.raw("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        if not allow_duplicate:
            taken = await User.select(User.id).where(User.name == name).output(as_list=True)
            if taken:
                raise UserError(
                    f"a user named {name!r} already exists ({_ids(taken)}); choose another name, "
                    "or allow a duplicate (--allow-duplicate)"
                )
        await user.save()
    return NewUser(id=user.id, name=name, is_admin=is_admin, api_key=api_key)


async def list_users() -> list[UserRecord]:
    """Every user, oldest first."""
    rows = await User.select(User.id, User.name, User.is_admin, User.created_at, User.api_key_hash).order_by(
        User.created_at
    )
    return [_record(row) for row in rows]


async def find_user(reference: str) -> UserRecord:
    """The user ``reference`` names: an id, or a name no other user has. Raises ``UserError`` saying which is wrong."""
    reference = reference.strip()
    query = User.select(User.id, User.name, User.is_admin, User.created_at, User.api_key_hash)
    try:
        user_id = uuid.UUID(reference)
    except ValueError:
        rows = await query.where(User.name == reference)
        if not rows:
            raise UserError(f"no user is named {reference!r} (python -m server list-users shows them)") from None
        if len(rows) > 1:
            ids = _ids([row["id"] for row in rows])
            raise UserError(f"{len(rows)} users are named {reference!r} ({ids}): name one by its id") from None
        return _record(rows[0])
    rows = await query.where(User.id == user_id)
    if not rows:
        raise UserError(f"no user has the id {user_id}")
    return _record(rows[0])


async def revoke_key(reference: str) -> tuple[UserRecord, bool]:
    """Revoke the key of the user ``reference`` names (see ``find_user``); the flag is False when it already was."""
    user = await find_user(reference)
    if user.key_fingerprint is None:
        return user, False
    await User.update({User.api_key_hash: _REVOKED + uuid.uuid4().hex}).where(User.id == user.id)
    return user, True


async def rotate_key(reference: str) -> NewUser:
    """Give the user ``reference`` names a new key; the old one, if any, stops matching at once."""
    user = await find_user(reference)
    api_key = new_api_key()
    await User.update({User.api_key_hash: hash_api_key(api_key)}).where(User.id == user.id)
    return NewUser(id=user.id, name=user.name, is_admin=user.is_admin, api_key=api_key)


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise UserError("a user needs a non-empty name")
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(f"a user's name is at most {MAX_NAME_LENGTH} characters")
    return name


class _UserRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    is_admin: bool
    created_at: datetime
    api_key_hash: str


def _record(row: dict[str, Any]) -> UserRecord:
    user = msgspec.convert(row, _UserRow)
    revoked = user.api_key_hash.startswith(_REVOKED)
    return UserRecord(
        id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        created_at=user.created_at,
        key_fingerprint=None if revoked else key_fingerprint(user.api_key_hash),
    )


def _ids(ids: list[uuid.UUID]) -> str:
    return ", ".join(str(user_id) for user_id in ids)
