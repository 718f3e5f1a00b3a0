"""A durable local spool for usage records the database could not take.

A record is written to its own file (``<call_id>.json``) with write-to-temporary, fsync and rename, so a crash
leaves either the whole record or none of it. Replay writes each record through the same idempotent statement as
the live path, so a record replayed twice (two workers, or a crash between the write and the unlink) counts once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from server.llm.recorder import UsageRecord

logger = logging.getLogger("tollbooth.spool")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageRecord)


class UsageSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._rejected = directory / "rejected"

    def put(self, record: UsageRecord) -> Path:
        """Persist ``record`` durably before returning."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{record.call_id}.json"
        temporary = target.with_suffix(".tmp")
        with open(temporary, "wb") as file:
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
        files = [path for path in self.directory.glob("*.json") if path.is_file()]
        return sorted(files, key=lambda path: path.stat().st_mtime_ns)

    async def replay(self, write: Callable[[UsageRecord], Awaitable[object]]) -> int:
        """Write every spooled record; stop at the first database failure. Returns how many were written."""
        written = 0
        for path in self.pending():
            try:
                record = _decoder.decode(path.read_bytes())
            except FileNotFoundError:
                continue  # another worker replayed it
            except msgspec.DecodeError as error:
                self._rejected.mkdir(exist_ok=True)
                path.replace(self._rejected / path.name)
                logger.error("usage spool: %s is unreadable (%s); moved to %s", path.name, error, self._rejected)
                continue
            try:
                await write(record)
            except Exception as error:
                logger.warning(
                    "usage spool: database still unavailable (%s); %d record(s) wait", error, len(self.pending())
                )
                break
            path.unlink(missing_ok=True)
            written += 1
        if written:
            logger.info("usage spool: replayed %d record(s)", written)
        return written

    async def replay_forever(self, write: Callable[[UsageRecord], Awaitable[object]], interval: float) -> None:
        """Replay pending records every ``interval`` seconds until cancelled."""
        while True:
            if self.pending():
                await self.replay(write)
            await asyncio.sleep(interval)
