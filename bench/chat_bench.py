"""Benchmark: what the server, its transaction included, adds to a model call.

Starts the provider simulator and ``python -m server`` as separate processes on loopback, then drives
``chat.sendMessage`` over HTTP at each concurrency, and the same provider call made directly with the openai SDK (no
server), and prints requests/s, p50/p99 latency and what the server adds. All traffic stays on 127.0.0.1.

    python bench/chat_bench.py [--requests 2000] [--concurrency 1 16 64] [--database-url URL] [--budget]

``--budget`` puts every call under a global daily hard budget (a limit it never reaches), so each call is admitted by
the budget path: its worst case reserved under the budget's row lock, and released by the recording transaction.

A fresh database ``tollbooth_bench_chat`` is created for the run and dropped afterwards, on the embedded PostgreSQL
that ``python -m server`` uses (``DATA_DIR/postgres``), or on the server ``--database-url`` or ``BENCH_DATABASE_URL``
names; the first line of output says which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import httpx
import openai
from bench_database import add_argument as add_database_argument
from bench_database import server_url, with_database

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "tollbooth_bench_chat"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def recreate_database(admin_url: str, database: str = BENCH_DATABASE, *, drop_only: bool = False) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if not drop_only:
            await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()


def wait_for(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start within 60 s")


@contextmanager
def background(command: list[str], env: dict[str, str], ready_url: str, what: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(ready_url, process, what)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


async def drive(call: Callable[[], Awaitable[None]], total: int, concurrency: int) -> tuple[float, list[float]]:
    """Run ``total`` calls, ``concurrency`` at a time; return (requests/s, latencies in ms)."""
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process ``pid`` has used so far (Linux ``/proc``; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace, server: str, api_key: str, openai_url: str) -> None:
    direct = openai.AsyncOpenAI(api_key="sk-bench", base_url=openai_url, max_retries=0)
    body = b'{"message":"What does a token cost?","model":"gpt-4o-mini"}'
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    # aiohttp drives the server: httpx's connection pool costs the load generator ~5 ms of CPU per request at 64
    # connections (measured), which on 2 cores would be charged to the server under test.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=server, connector=connector) as client:

        async def via_server() -> None:
            async with client.post("/trpc/chat.sendMessage", data=body, headers=headers) as response:
                payload = await response.read()
                if response.status != 200:
                    raise SystemExit(f"chat.sendMessage failed: {response.status} {payload.decode()}")

        async def direct_call() -> None:
            await direct.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "What does a token cost?"}]
            )

        print(f"{'concurrency':>11} {'path':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for concurrency in args.concurrency:
            results = {}
            for name, call in (("direct", direct_call), ("server", via_server)):
                # Warm up at this concurrency first: connections, pool growth, prepared statements, price lookups.
                await drive(call, 4 * concurrency, concurrency)
                rate, latencies = await drive(call, args.requests, concurrency)
                results[name] = (rate, percentile(latencies, 0.5), percentile(latencies, 0.99))
                print(f"{concurrency:>11} {name:>8} {rate:>8.0f} {results[name][1]:>8.2f} {results[name][2]:>8.2f}")
            added_p50 = results["server"][1] - results["direct"][1]
            added_p99 = results["server"][2] - results["direct"][2]
            ratio = results["server"][0] / results["direct"][0]
            print(
                f"{concurrency:>11} {'added':>8} {'':>8} {added_p50:>8.2f} {added_p99:>8.2f}"
                f"   server/direct throughput ratio {ratio:.2f}"
            )
    await direct.close()


async def add_global_budget(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO budgets (id, scope, period, limit_usd, hard, alert_thresholds)"
            " VALUES (gen_random_uuid(), 'global', 'day', 1000000000, true, '{}')"
        )
    finally:
        await connection.close()


@dataclass(frozen=True)
class Service:
    """The service under test and its provider, as the load generator reaches them."""

    url: str
    api_key: str
    openai_url: str
    pid: int
    """The service's process, whose CPU time a benchmark may read (``cpu_seconds``)."""
    simulator_pid: int


@contextmanager
def running_service(admin_url: str, database: str, *, budget: bool = False) -> Iterator[Service]:
    """A fresh ``database`` on ``admin_url``'s server, migrated, with one user (under a global hard budget with
    ``budget``), the simulator and ``python -m server`` as separate processes on loopback; all removed afterwards."""
    asyncio.run(recreate_database(admin_url, database))
    simulator_port, server_port = free_port(), free_port()
    simulator = f"http://127.0.0.1:{simulator_port}"
    env = {
        **os.environ,
        "DATABASE_URL": with_database(admin_url, database),
        "PORT": str(server_port),
        "LOG_LEVEL": "WARNING",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"{simulator}/openai/v1",
        "PROVIDER_MAX_RETRIES": "0",
    }
    try:
        subprocess.run([sys.executable, "-m", "server", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
        created = subprocess.run(
            [sys.executable, "-m", "server", "create-user", "--name", "bench", "--quiet"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        if budget:
            asyncio.run(add_global_budget(with_database(admin_url, database)))
        simulator_command = [sys.executable, "-m", "server.simulator", "--port", str(simulator_port)]
        with (
            background(simulator_command, env, f"{simulator}/_sim/requests", "the simulator") as simulated,
            background(
                [sys.executable, "-m", "server"], env, f"http://127.0.0.1:{server_port}/healthz", "the server"
            ) as served,
        ):
            url, key = f"http://127.0.0.1:{server_port}", created.stdout.strip()
            yield Service(url, key, f"{simulator}/openai/v1", served.pid, simulated.pid)
    finally:
        asyncio.run(recreate_database(admin_url, database, drop_only=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--budget", action="store_true", help="run every call under a global hard budget")
    add_database_argument(parser)
    args = parser.parse_args()
    with running_service(server_url(args.database_url), BENCH_DATABASE, budget=args.budget) as service:
        print(f"{args.requests} calls per row; server and simulator are separate processes on loopback")
        asyncio.run(measure(args, service.url, service.api_key, service.openai_url))


if __name__ == "__main__":
    main()
