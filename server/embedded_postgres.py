"""Keeping the embedded PostgreSQL's list of users true after a process was killed.

``pgserver`` shares one server per data directory between processes: each adds its pid to ``<pgdata>/.handle_pids.json``
when it joins and removes it in an ``atexit`` handler, and the last one out stops the server. A process killed by a
signal (SIGKILL, or SIGTERM without a handler) runs no ``atexit`` handler, so its pid stays on the list for good, no
later process is ever the last one out, and the server keeps running after every later run. Before joining, the pids
of processes that no longer exist are taken off the list, under pgserver's own lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

logger = logging.getLogger("tollbooth.database")

HANDLES_FILE: Final = ".handle_pids.json"


def forget_exited_processes(pgdata: Path, lock_path: Path) -> list[int]:
    """Remove the pids of processes that have exited from the handle list in ``pgdata``; returns them.

    ``lock_path`` is pgserver's inter-process lock file (``PostgresServer.lock_path``), held while the list is
    rewritten, as pgserver holds it while it reads and writes the list.
    """
    handles = pgdata / HANDLES_FILE
    if not handles.exists():
        return []
    with _locked(lock_path):
        pids: list[int] = json.loads(handles.read_text() or "[]")
        exited = [pid for pid in pids if not process_running(pid)]
        if exited:
            handles.write_text(json.dumps([pid for pid in pids if pid not in exited]))
    if exited:
        logger.info("embedded PostgreSQL in %s: forgot %d exited process(es) %s", pgdata, len(exited), exited)
    return exited


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # pgserver locks with fcntl.lockf (through fasteners) on the same file; these are POSIX record locks, held per
    # process, so this is only ever taken when this process does not hold pgserver's lock.
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock_file:
        fcntl.lockf(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(lock_file, fcntl.LOCK_UN)


def process_running(pid: int) -> bool:
    """Whether the process ``pid`` exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # it ended meanwhile, or there is no /proc (macOS) and kill() found it
        return not Path("/proc/self").exists()
    return state != "Z"  # a zombie has exited, only not been reaped yet
