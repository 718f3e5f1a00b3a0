"""A killed process leaves the embedded PostgreSQL neither running for good nor holding its test databases.

The interrupted runs are real ``pytest`` processes with this suite's ``conftest`` (loaded as a plugin) on an embedded
PostgreSQL of their own (``TEST_PGDATA``), running one probe test that records what it saw and, in the run to be
killed, then waits to be killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server.embedded_postgres import HANDLES_FILE, forget_exited_processes, process_running

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import asyncio, json, os, time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg


def test_probe() -> None:
    url = os.environ["DATABASE_URL"]

    async def databases() -> list[str]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'tollbooth_test_%'")
            return sorted(row["datname"] for row in rows)
        finally:
            await connection.close()

    seen = {"own": urlsplit(url).path.lstrip("/"), "databases": asyncio.run(databases())}
    Path(os.environ["PROBE_REPORT"]).write_text(json.dumps(seen))
    if os.environ.get("PROBE_HANG"):
        time.sleep(120)
"""


def _pytest(probe: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    command += ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), str(probe)]
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)


def _postmaster(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def _handles(pgdata: Path) -> list[int]:
    handles: list[int] = json.loads((pgdata / HANDLES_FILE).read_text())
    return handles


def _wait(condition: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {condition}"
        time.sleep(0.1)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_after_a_test_run_killed_by_a_signal_the_next_run_stops_the_embedded_postgres_and_drops_its_database(
    tmp_path: Path, embedded_dir: Path, stop: signal.Signals
) -> None:
    pgdata = embedded_dir / "test-postgres"
    probe = tmp_path / "probe" / "test_probe.py"
    probe.parent.mkdir()
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env["TEST_PGDATA"] = str(pgdata)
    killed_report, next_report = tmp_path / "killed.json", tmp_path / "next.json"
    killed = _pytest(probe, {**env, "PROBE_REPORT": str(killed_report), "PROBE_HANG": "1"}, tmp_path / "killed.log")
    try:
        _wait("the run to be killed reaches its test", lambda: killed_report.exists() or killed.poll() is not None, 60)
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()
        postmaster = _postmaster(pgdata)
        assert postmaster is not None
        assert _handles(pgdata) == [killed.pid]
        killed.send_signal(stop)
        killed.wait(timeout=30)
        if stop == signal.SIGTERM:  # the run unwinds as on Ctrl-C: its database dropped, the server stopped
            _wait("the embedded PostgreSQL stops", lambda: not process_running(postmaster), 15)
            assert _handles(pgdata) == []
        else:  # nothing ran at exit: the dead run is still on the server's list, which keeps it running
            assert _handles(pgdata) == [killed.pid]
            assert process_running(postmaster)

        following = _pytest(probe, {**env, "PROBE_REPORT": str(next_report)}, tmp_path / "next.log")
        assert following.wait(timeout=120) == 0, (tmp_path / "next.log").read_text()
        seen = json.loads(next_report.read_text())
        assert seen["databases"] == [seen["own"]], "the killed run's database is still there"
        assert json.loads(killed_report.read_text())["own"] != seen["own"]
        assert _handles(pgdata) == []
        _wait("the embedded PostgreSQL stops after the next run", lambda: not process_running(postmaster), 15)
        assert _postmaster(pgdata) is None
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
        leftover = _postmaster(pgdata)
        if leftover is not None and process_running(leftover):
            os.kill(leftover, signal.SIGINT)  # PostgreSQL's fast shutdown


def test_forget_exited_processes_keeps_the_running_ones(tmp_path: Path) -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    (tmp_path / HANDLES_FILE).write_text(json.dumps([os.getpid(), exited.pid]))
    assert forget_exited_processes(tmp_path, tmp_path / "lock") == [exited.pid]
    assert _handles(tmp_path) == [os.getpid()]
    assert forget_exited_processes(tmp_path, tmp_path / "lock") == []
    assert forget_exited_processes(tmp_path / "absent", tmp_path / "lock") == []
