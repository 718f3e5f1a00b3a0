"""Several worker processes (``WORKERS``, ``server/workers.py``): one service, one set of numbers.

A real ``python -m server`` with two workers serves calls and reports, from whichever worker a scrape reaches, the
totals of the usage rows; two processes replaying one spool at once write each record once.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from server.embedded_postgres import process_running
from server.llm.recorder import UsageRecord, UsageRecorder
from server.llm.spool import UsageSpool
from server.simulator import RunningSimulator
from server.users import NewUser, create_user
from server.workers import metrics_directory
from tests.conftest import ROOT, app_database, fetch_rows, simulator_env
from tests.test_metrics import assert_metrics_match, expected_from_usage_rows, parse
from tests.usage_records import CATALOGUE, tokens

MODELS = ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash")
START_SECONDS = 120  # two workers importing everything on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _service(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m server`` with ``env`` on a free port, once it answers ``/healthz``; stopped with SIGTERM."""
    port = _free_port()
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=ROOT, env={**env, "PORT": str(port)}, stdout=output, stderr=output
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield process, base
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


async def test_two_workers_serve_calls_and_every_scrape_reports_the_totals_of_the_usage_rows(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, **simulator_env(sim, DATA_DIR=str(data_dir), WORKERS="2")}
    log = tmp_path / "server.log"
    headers = {"authorization": f"Bearer {alice.api_key}"}
    with _service(env, log) as (process, base):
        workers_dir = data_dir / "metrics" / str(process.pid)
        # A connection per request, several at once: the workers accept from one socket, so both get some.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"{base}/trpc", headers=headers, timeout=30, limits=limits) as http:
            for _ in range(10):
                calls = [
                    http.post("/chat.sendMessage", json={"message": f"question {i}", "model": MODELS[i % 3]})
                    for i in range(12)
                ]
                for response in await asyncio.gather(*calls):
                    assert response.status_code == 200, response.text
                if len(list(workers_dir.glob("counter_*.db"))) == 2:
                    break
            assert len(list(workers_dir.glob("counter_*.db"))) == 2, "both workers served calls"

        expected = await expected_from_usage_rows()
        assert sum(expected["calls"].values()) == len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) >= 12
        async with httpx.AsyncClient(base_url=base, limits=limits) as http:
            for _ in range(6):  # each scrape reaches one worker or the other: all say the same
                response = await http.get("/metrics")
                assert response.status_code == 200
                assert_metrics_match(parse(response.text), expected)

        # Without CONSOLE_SECRET the workers share the key the parent made: a console session opened in one worker
        # is honoured by the other, whichever a request reaches.
        root = await create_user("root", is_admin=True)
        async with httpx.AsyncClient(
            base_url=base, limits=limits, headers={"Sec-Fetch-Site": "same-origin"}
        ) as console:
            signed_in = await console.post("/console/sign-in", data={"api_key": root.api_key, "next": "/console/"})
            assert signed_in.status_code == 303, signed_in.text
            assert signed_in.headers["location"] == "/console/"
            for _ in range(8):
                page = await console.get("/console/alerts")
                assert page.status_code == 200, page.headers

        process.terminate()
        assert process.wait(timeout=60) == 0, log.read_text()
    assert not workers_dir.exists()  # the run's metrics directory goes with it
    assert "serving with 2 worker processes" in log.read_text()


def test_each_run_gets_a_fresh_metrics_directory_and_those_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "metrics" / dead.stdout.strip()
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"old")
    own = metrics_directory(tmp_path)
    (own / "counter_2.db").write_bytes(b"old")

    again = metrics_directory(tmp_path)
    assert again == own == tmp_path / "metrics" / str(os.getpid())
    assert list(again.iterdir()) == []
    assert not stale.exists()


_REPLAYER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from server.database import Database
    from server.llm.recorder import UsageRecorder
    from server.llm.spool import UsageSpool

    async def main() -> None:
        db = Database.from_piccolo_conf()
        await db.start(min_size=1, max_size=2)
        recorder, written = UsageRecorder(db), []

        async def write(record):
            await asyncio.sleep(0.005)
            await recorder.write(record)
            written.append(str(record.call_id))

        print("ready", flush=True)
        sys.stdin.readline()
        await UsageSpool(Path(sys.argv[1])).replay(write)
        print(json.dumps(written), flush=True)
        await db.close()

    asyncio.run(main())
    """
)


async def test_two_processes_replaying_one_spool_at_once_write_each_record_once(alice: NewUser, tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "spool")
    now = datetime.datetime.now(datetime.UTC)
    records = 120
    for n in range(records):
        usage = tokens(100 + n, output=10)
        spool.put(
            UsageRecord(
                call_id=uuid.uuid4(),
                created_at=now,
                user_id=alice.id,
                conversation_id=None,
                conversation_title="",
                procedure="chat.sendMessage",
                provider="openai",
                requested_model="gpt-4o-mini",
                model="gpt-4o-mini",
                usage=usage,
                priced=CATALOGUE.price("openai", "gpt-4o-mini", usage, now),
                latency_ms=100,
                status="ok",
            )
        )
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _REPLAYER,
        str(spool.directory),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert other.stdout is not None
    assert other.stdin is not None
    assert (await asyncio.wait_for(other.stdout.readline(), 60)).strip() == b"ready"
    recorder, mine = UsageRecorder(app_database()), []

    async def write(record: UsageRecord) -> None:
        await asyncio.sleep(0.005)
        await recorder.write(record)
        mine.append(str(record.call_id))

    other.stdin.write(b"go\n")
    await other.stdin.drain()
    await spool.replay(write)
    theirs = json.loads(await asyncio.wait_for(other.stdout.readline(), 60))
    assert await asyncio.wait_for(other.wait(), 30) == 0

    assert mine, "this process replayed some records"
    assert theirs, "the other process replayed some records"
    assert not set(mine) & set(theirs), "no record was written by both"
    assert len(mine) + len(theirs) == records
    assert spool.pending() == []
    assert len(await fetch_rows("SELECT 1 FROM ai_usage_logs")) == records


def test_with_several_workers_the_parent_alone_runs_the_embedded_postgres_and_stops_it(embedded_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    data_dir = embedded_dir / ".data"
    env.update(DATA_DIR=str(data_dir), WORKERS="2")
    with _service(env, embedded_dir / "server.log") as (process, base):
        assert json.loads((data_dir / "postgres" / ".handle_pids.json").read_text()) == [process.pid]
        postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        created = subprocess.run(
            [sys.executable, "-m", "server", "create-user", "--name", "w", "--quiet"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        headers = {"authorization": f"Bearer {created.stdout.strip()}"}
        response = httpx.post(
            f"{base}/trpc/chat.sendMessage", json={"message": "hi"}, headers=headers, timeout=30
        )  # offline: the simulator of the worker answers
        assert response.status_code == 200, response.text
        process.terminate()
        assert process.wait(timeout=60) == 0
    deadline = time.monotonic() + 15
    while process_running(postmaster):
        assert time.monotonic() < deadline, "the embedded PostgreSQL outlived the service"
        time.sleep(0.2)
