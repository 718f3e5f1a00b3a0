"""Benchmark: what the server, its transaction included, adds to a model call.

Starts the provider simulator and ``python -m server`` as separate processes on loopback, then drives
``chat.sendMessage`` over HTTP at each concurrency, and the same provider call made directly with the openai SDK (no
server), and prints requests/s, p50/p99 latency and what the server adds. All traffic stays on 127.0.0.1.

    python bench/chat_bench.py [--requests 2000] [--concurrency 1 16 64] [--database-url URL] [--budget] [--workers N]
    python bench/chat_bench.py --compare-metrics [--requests 2000] [--rounds 10]

``--compare-metrics`` runs two services side by side, ``METRICS_ENABLED`` true and false, and measures p50 at
concurrency 1 of each in interleaved rounds: what counting a call costs on the hot path.

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
from collections.abc import Awaitable, Callable, Iterator, Mapping
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
    """The service's process (with one worker, the one that serves), whose CPU time a benchmark may read
    (``cpu_seconds``)."""
    simulator_pid: int


@contextmanager
def running_service(
    admin_url: str, database: str, *, budget: bool = False, env: Mapping[str, str] | None = None
) -> Iterator[Service]:
    """A fresh ``database`` on ``admin_url``'s server, migrated, with one user (under a global hard budget with
    ``budget``), the simulator and ``python -m server`` (``env`` added to its environment) as separate processes on
    loopback; all removed afterwards."""
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
        **(env or {}),
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


async def compare_metrics(args: argparse.Namespace, on: Service, off: Service) -> None:
    """p50 at concurrency 1 of two services, metrics on and off, measured in interleaved rounds (so a drift of the
    machine hits both alike), beside the direct provider call."""
    body = b'{"message":"What does a token cost?","model":"gpt-4o-mini"}'
    direct = openai.AsyncOpenAI(api_key="sk-bench", base_url=on.openai_url, max_retries=0)
    latencies: dict[str, list[float]] = {"direct": [], "metrics on": [], "metrics off": []}
    cpu: dict[str, float] = {"metrics on": 0.0, "metrics off": 0.0}
    pids = {"metrics on": on.pid, "metrics off": off.pid}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:

        def via(service: Service) -> Callable[[], Awaitable[None]]:
            headers = {"authorization": f"Bearer {service.api_key}", "content-type": "application/json"}

            async def call() -> None:
                async with client.post(f"{service.url}/trpc/chat.sendMessage", data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"chat.sendMessage failed: {response.status}")

            return call

        async def direct_call() -> None:
            await direct.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "What does a token cost?"}]
            )

        calls = {"direct": direct_call, "metrics on": via(on), "metrics off": via(off)}
        for call in calls.values():
            await drive(call, 50, 1)  # warm up
        per_round = max(args.requests // args.rounds, 1)
        for round_number in range(args.rounds):
            # The service measured first in a round measured slower by about 0.2 ms whichever it was: alternate.
            order = (
                ["direct", "metrics on", "metrics off"]
                if round_number % 2 == 0
                else ["direct", "metrics off", "metrics on"]
            )
            for name in order:
                call = calls[name]
                before = cpu_seconds(pids[name]) if name in pids else 0.0
                latencies[name] += (await drive(call, per_round, 1))[1]
                if name in pids:
                    cpu[name] += cpu_seconds(pids[name]) - before
    await direct.close()
    p50 = {name: percentile(values, 0.5) for name, values in latencies.items()}
    print(f"concurrency 1, {args.rounds} interleaved rounds of {per_round} calls each")
    calls_measured = per_round * args.rounds
    for name in ("direct", "metrics on", "metrics off"):
        added = "" if name == "direct" else f"   added p50 {p50[name] - p50['direct']:.3f} ms"
        per_call = f"   service CPU {1000 * cpu[name] / calls_measured:.3f} ms/call" if name in cpu else ""
        print(f"{name:>12}: p50 {p50[name]:.3f} ms{added}{per_call}")
    p50_cost = p50["metrics on"] - p50["metrics off"]
    cpu_cost = 1000 * (cpu["metrics on"] - cpu["metrics off"]) / calls_measured
    print(f"cost of metrics: {p50_cost:+.3f} ms at p50, {cpu_cost:+.3f} ms of service CPU per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--budget", action="store_true", help="run every call under a global hard budget")
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="measure p50 at concurrency 1 with METRICS_ENABLED true and false, interleaved (two services)",
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of --compare-metrics (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="WORKERS of the service (default 1)")
    add_database_argument(parser)
    args = parser.parse_args()
    admin_url = server_url(args.database_url)
    workers = {"WORKERS": str(args.workers)}
    if args.compare_metrics:
        with (
            running_service(admin_url, BENCH_DATABASE, budget=args.budget, env=workers) as on,
            running_service(
                admin_url, f"{BENCH_DATABASE}_off", budget=args.budget, env={**workers, "METRICS_ENABLED": "false"}
            ) as off,
        ):
            asyncio.run(compare_metrics(args, on, off))
        return
    with running_service(admin_url, BENCH_DATABASE, budget=args.budget, env=workers) as service:
        print(f"{args.requests} calls per row; {args.workers} worker(s); server and simulator are separate processes")
        asyncio.run(measure(args, service.url, service.api_key, service.openai_url))


if __name__ == "__main__":
    main()
