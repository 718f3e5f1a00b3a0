"""A durable local spool for usage records the database could not take.

A record is written to its own file (``<call_id>.json``, readable by this user only: it holds message content) with
write-to-temporary, fsync and rename, so a crash leaves either the whole record or none of it. Replay writes each
record through the same idempotent statement as the live path, so a record replayed twice (two workers, or a crash
between the write and the unlink) counts once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import asyncpg
import msgspec

from server.llm.recorder import UsageRecord

logger = logging.getLogger("tollbooth.spool")

REPLAY_WRITE_TIMEOUT: Final = 10.0
# The database refused the record itself (a value it cannot store, a broken reference): retrying cannot help, and
# the record must not block the ones behind it. Anything else (no connection, a timeout) is worth retrying.
_PERMANENT: Final = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageRecord)


class UsageSpool:
    """Usage records waiting for the database, one JSON file each (``UsageRecord``, msgspec-encoded) in ``directory``.

    ``put`` is durable before it returns and blocks (fsync): call it in a thread. ``replay`` writes every pending
    record, oldest first, through a writer (``UsageRecorder.write``) and deletes it once written; a record the database
    refuses for good (``asyncpg.DataError``, a constraint) moves to ``directory/rejected`` so it cannot block the rest,
    and any other failure stops the pass, leaving the rest for the next one. ``replay_forever`` runs a pass every
    ``interval`` seconds. Nothing here raises for a database failure; ``put`` raises ``OSError`` when the disk does.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected = directory / "rejected"

    def put(self, record: UsageRecord) -> Path:
        """Persist ``record`` durably before returning (blocking: call it in a thread)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.directory / f"{record.call_id}.json"
        temporary = target.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(_encoder.encode(record))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return target

    def pending(self) -> list[Path]:
        """Spooled records, oldest first."""
        if not self.directory.is_dir():
            return []
        files: list[tuple[int, Path]] = []
        for path in self.directory.glob("*.json"):
            try:
                files.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:
                continue  # another worker replayed it meanwhile
        return [path for _, path in sorted(files)]

    async def replay(self, write: Callable[[UsageRecord], Awaitable[object]]) -> int:
        """Write every spooled record; stop at the first failure worth retrying. Returns how many were written.

        A record the database refuses for good is moved to ``rejected/`` and logged, so it never blocks the rest.
        """
        written = 0
        for path in await asyncio.to_thread(self.pending):
            try:
                record = _decoder.decode(await asyncio.to_thread(path.read_bytes))
            except FileNotFoundError:
                continue
            except msgspec.DecodeError as error:
                await self._reject(path, f"unreadable: {error}")
                continue
            try:
                async with asyncio.timeout(REPLAY_WRITE_TIMEOUT):
                    await write(record)
            except _PERMANENT as error:
                await self._reject(path, f"refused by the database: {type(error).__name__} {error.sqlstate}")
                continue
            except Exception as error:
                logger.warning("usage spool: the database is still unavailable (%s); will retry", type(error).__name__)
                break
            await asyncio.to_thread(path.unlink, True)
            written += 1
        if written:
            logger.info("usage spool: replayed %d record(s)", written)
        return written

    async def replay_forever(self, write: Callable[[UsageRecord], Awaitable[object]], interval: float) -> None:
        """Replay pending records every ``interval`` seconds until cancelled; a failed pass never ends the loop."""
        while True:
            try:
                await self.replay(write)
            except Exception:
                logger.exception("usage spool: replay pass failed; will retry")
            await asyncio.sleep(interval)

    async def _reject(self, path: Path, reason: str) -> None:
        def move() -> None:
            self.rejected.mkdir(mode=0o700, exist_ok=True)
            path.replace(self.rejected / path.name)

        await asyncio.to_thread(move)
        logger.error("usage spool: %s %s; moved to %s for repair", path.name, reason, self.rejected)
