"""Several worker processes: ``WORKERS`` > 1 makes ``python -m server`` a supervisor of that many.

The parent does what must happen once: it starts the embedded PostgreSQL (when ``DATABASE_URL`` is unset) and applies
the migrations (``server.cli``), then hands every worker the database's URL in ``DATABASE_URL``, so that no worker
starts or joins a server of its own. It binds the listening socket and runs uvicorn's supervisor, which spawns the
workers (each builds the app with ``server.cli.worker_app``), replaces a worker that dies, and stops them all on
SIGINT or SIGTERM; the parent then exits normally, stopping the embedded PostgreSQL.

Metrics: the parent makes a fresh directory for prometheus-client's multiprocess mode under ``DATA_DIR/metrics/``
(named by its pid; those of parents that no longer run are removed first) and exports it in
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus-client. Each worker writes its values there, and a
scrape of any worker sums them all (``server.metrics``). A worker that exits is marked dead
(``multiprocess.mark_process_dead``); the directory is removed when the service stops. Without ``CONSOLE_SECRET`` the
parent makes one for all the workers, so that a console session cookie verifies in whichever worker a request
reaches.

The rest is safe with several processes by construction: the spool's replay locks each file it replays
(``server.llm.spool``), the claim sweeper, the alert deliverer and the pruners take rows with ``FOR UPDATE SKIP
LOCKED`` or delete idempotently, and so run in every worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Final

import uvicorn
from uvicorn.supervisors import Multiprocess

from server.embedded_postgres import process_running
from server.metrics import MULTIPROCESS_DIRECTORY_VARIABLE
from server.settings import Settings

logger = logging.getLogger("tollbooth")

WORKER_APP: Final = "server.cli:worker_app"
METRICS_DIRECTORY: Final = "metrics"


def metrics_directory(data_dir: Path, pid: int | None = None) -> Path:
    """A fresh, empty directory for this run's multiprocess metrics, ``DATA_DIR/metrics/<pid>``; the directories of
    earlier runs whose process is gone are removed (another service running on the same ``DATA_DIR`` keeps its own).
    """
    pid = pid or os.getpid()
    parent = data_dir / METRICS_DIRECTORY
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in parent.iterdir():
        if directory.name.isdigit() and (int(directory.name) == pid or not process_running(int(directory.name))):
            shutil.rmtree(directory, ignore_errors=True)
    directory = parent / str(pid)
    directory.mkdir(mode=0o700)
    return directory


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, marking every worker that has gone dead in the metrics directory."""

    def __init__(self, config: uvicorn.Config, directory: Path, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._directory = directory
        self._known: set[int] = set()

    def _forget_exited(self) -> None:
        running = {process.pid for process in self.processes if process.pid is not None}
        for pid in self._known - running:
            _mark_dead(pid, self._directory)
        self._known = running

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._forget_exited()

    def handle_signals(self) -> None:  # SIGHUP restarts every worker, SIGTTOU retires one
        super().handle_signals()
        self._forget_exited()

    def run(self) -> None:
        try:
            super().run()
        finally:
            for pid in self._known | {process.pid for process in self.processes if process.pid is not None}:
                _mark_dead(pid, self._directory)


def _mark_dead(pid: int, directory: Path) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def serve_workers(settings: Settings, database_url: str) -> None:
    """Serve with ``settings.workers`` processes on the database at ``database_url`` until SIGINT or SIGTERM."""
    os.environ["DATABASE_URL"] = database_url
    directory = metrics_directory(settings.data_dir)
    os.environ[MULTIPROCESS_DIRECTORY_VARIABLE] = str(directory)
    if settings.console_secret is None:
        # One key for every worker: the console's session cookies must verify in whichever worker a request reaches.
        os.environ["CONSOLE_SECRET"] = secrets.token_urlsafe(48)
    config = uvicorn.Config(
        WORKER_APP,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        # uvicorn's access log prints query strings, which carry subscription inputs and connectionParams API keys.
        access_log=False,
    )
    listening = config.bind_socket()
    logger.info("serving with %d worker processes on %s:%d", settings.workers, settings.host, settings.port)
    try:
        _Supervisor(config, directory, [listening]).run()
    finally:
        listening.close()
        shutil.rmtree(directory, ignore_errors=True)
