"""Users and their API keys. Only a SHA-256 hash of a key is stored; the key itself is shown once, at creation.

Keys are 256 random bits, so a fast unsalted hash is the right tool: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Final

from server.tables import User

API_KEY_PREFIX: Final = "tb_"


@dataclass(frozen=True, slots=True)
class NewUser:
    id: uuid.UUID
    name: str
    is_admin: bool
    api_key: str


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


async def create_user(name: str, *, is_admin: bool = False) -> NewUser:
    name = name.strip()
    if not name:
        raise ValueError("a user needs a non-empty name")
    if len(name) > 200:
        raise ValueError("a user's name is at most 200 characters")
    api_key = new_api_key()
    user = User(name=name, is_admin=is_admin, api_key_hash=hash_api_key(api_key))
    await user.save()
    return NewUser(id=user.id, name=name, is_admin=is_admin, api_key=api_key)
