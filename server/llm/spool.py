"""A durable local spool for usage records the database could not take.

A record is written to its own file (``<call_id>.json``, readable by this user only: it holds message content) with
write-to-temporary, fsync and rename, so a crash leaves either the whole record or none of it. Several worker
processes share one spool: a replay takes each file's lock (``flock``, not waiting) before it reads it and keeps it
until the file is gone, so two workers replaying at once never write the same file twice. The write goes through
the same idempotent statement as the live path all the same, so a record replayed again after a crash between the
write and the unlink still counts once.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import asyncpg
import msgspec

from server.llm.ledger import Claim
from server.llm.recorder import UsageRecord

logger = logging.getLogger("tollbooth.spool")

REPLAY_WRITE_TIMEOUT: Final = 10.0
# The database refused the record itself (a value it cannot store, a broken reference): retrying cannot help, and
# the record must not block the ones behind it. Anything else (no connection, a timeout) is worth retrying.
_PERMANENT: Final = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageRecord)
_claim_decoder = msgspec.json.Decoder(Claim)


class UsageSpool:
    """Usage records waiting for the database, one JSON file each (``UsageRecord``, msgspec-encoded) in ``directory``.

    ``put`` is durable before it returns and blocks (fsync): call it in a thread. ``replay`` writes every pending
    record, oldest first, through a writer (``UsageRecorder.write``) and deletes it once written; a record the database
    refuses for good (``asyncpg.DataError``, a constraint) moves to ``directory/rejected`` so it cannot block the rest,
    and any other failure stops the pass, leaving the rest for the next one (the app runs a pass every few seconds).
    Nothing here raises for a database failure; ``put`` raises ``OSError`` when the disk does.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected = directory / "rejected"
        self.claims = directory / "claims"

    def put(self, record: UsageRecord) -> Path:
        """Persist ``record`` durably before returning (blocking: call it in a thread)."""
        return _write_durably(self.directory, record.call_id, _encoder.encode(record))

    def put_claim(self, claim: Claim) -> Path:
        """Persist the claim of a call about to be sent, durably, while the database is down (blocking)."""
        return _write_durably(self.claims, claim.call_id, _encoder.encode(claim))

    def discard_claim(self, call_id: uuid.UUID) -> None:
        """Forget a spooled claim once its call's record is written or spooled (blocking)."""
        (self.claims / f"{call_id}.json").unlink(missing_ok=True)

    def pending(self) -> list[Path]:
        """Spooled records, oldest first."""
        return _oldest_first(self.directory)

    def pending_claims(self) -> list[Path]:
        """Spooled claims, oldest first."""
        return _oldest_first(self.claims)

    async def replay(
        self,
        write: Callable[[UsageRecord], Awaitable[object]],
        write_claim: Callable[[Claim], Awaitable[object]] | None = None,
    ) -> int:
        """Write every spooled claim (with ``write_claim``), then every record; stop at the first failure worth
        retrying. Returns how many files were written.

        Claims go first so that a record written after them settles its claim. A file the database refuses for good
        is moved to ``rejected/`` and logged, so it never blocks the rest.
        """
        written = 0
        if write_claim is not None:
            written, complete = await self._replay(self.pending_claims(), _claim_decoder, write_claim)
            if not complete:
                return written
        records, _ = await self._replay(self.pending(), _decoder, write)
        written += records
        if written:
            logger.info("usage spool: replayed %d file(s)", written)
        return written

    async def _replay(
        self, paths: list[Path], decoder: msgspec.json.Decoder[T], write: Callable[[T], Awaitable[object]]
    ) -> tuple[int, bool]:
        written = 0
        for path in paths:
            locked = await asyncio.to_thread(_lock, path)
            if locked is None:  # another process is replaying it, or has replayed it
                continue
            descriptor, content = locked
            try:  # the lock is held until the file is gone (or moved to rejected/): closing releases it
                try:
                    item = decoder.decode(content)
                except msgspec.DecodeError as error:
                    await self._reject(path, f"unreadable: {error}")
                    continue
                try:
                    async with asyncio.timeout(REPLAY_WRITE_TIMEOUT):
                        await write(item)
                except _PERMANENT as error:
                    await self._reject(path, f"refused by the database: {type(error).__name__} {error.sqlstate}")
                    continue
                except Exception as error:
                    logger.warning(
                        "usage spool: the database is still unavailable (%s); will retry", type(error).__name__
                    )
                    return written, False
                await asyncio.to_thread(path.unlink, True)
                written += 1
            finally:
                os.close(descriptor)
        return written, True

    async def _reject(self, path: Path, reason: str) -> None:
        def move() -> None:
            self.rejected.mkdir(mode=0o700, exist_ok=True)
            path.replace(self.rejected / path.name)

        await asyncio.to_thread(move)
        logger.error("usage spool: %s %s; moved to %s for repair", path.name, reason, self.rejected)


def _lock(path: Path) -> tuple[int, bytes] | None:
    """Open ``path`` and take its exclusive lock, without waiting; its descriptor (holding the lock) and content, or
    None when another process holds the lock or has already replayed the file (unlinked or moved it).

    ``flock`` locks belong to the open file, so two workers (or two spools of one process) exclude each other, and a
    worker that dies releases its locks with its descriptors: no file is left claimed by a dead process.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Locked, but perhaps only after the replay that held it unlinked the file: then it is not ours to write.
        if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            content = file.read()
    except (BlockingIOError, FileNotFoundError):
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, content


def _oldest_first(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    files: list[tuple[int, Path]] = []
    for path in directory.glob("*.json"):
        try:
            files.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            continue  # another worker replayed it meanwhile
    return [path for _, path in sorted(files)]


def _write_durably(directory: Path, call_id: uuid.UUID, content: bytes) -> Path:
    """``directory/<call_id>.json`` written whole or not at all: temporary file, fsync, rename, fsync the directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / f"{call_id}.json"
    temporary = target.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
    return target
