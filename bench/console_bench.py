"""Benchmark of the admin console's pages on the admin bench's data set (1,000,000 usage rows over 90 days).

Fills the database with ``bench/admin_bench.py``'s generator unless ``--reuse`` keeps one it filled before, serves
the application in this process (uvicorn on loopback), signs in with a new admin key, and times each page over
HTTP for a 7-day and a 30-day range ending today: p50 and p99 over repeated requests after one warm-up. The client
is on the same loopback, so the times are the server's plus well under a millisecond.

    .venv/bin/python bench/console_bench.py --reuse                 # after bench/admin_bench.py filled it
    .venv/bin/python bench/console_bench.py --database-url postgresql://user@host:5432/postgres --reuse

Target: every page under 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from admin_bench import _create_database, _progress, fill
from bench_database import add_argument as add_database_argument
from bench_database import server_url, with_database

TARGET_MS = 300.0


async def _serve(settings: Any) -> tuple[Any, asyncio.Task[None], str]:
    import uvicorn

    from server.app import create_app

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


async def bench(url: str, *, repeat: int) -> None:
    import httpx

    from server.settings import Settings
    from server.users import create_user

    connection = await asyncpg.connect(url)
    latest: datetime = await connection.fetchval("SELECT max(created_at) FROM ai_usage_logs")
    rows = await connection.fetchval("SELECT count(*) FROM ai_usage_logs")
    await connection.close()
    admin = await create_user(f"console-bench-{uuid.uuid4().hex[:8]}", is_admin=True)
    settings = Settings.from_env({**os.environ, "LOG_LEVEL": "WARNING"})
    server, task, base = await _serve(settings)
    today = latest.astimezone(UTC).date()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            signed = await client.post("/console/sign-in", data={"api_key": admin.api_key})
            assert signed.status_code == 303, signed.text
            print(f"\nusage rows: {rows:,}; console pages over HTTP on loopback, ms (after one warm-up request)\n")
            print(f"{'page':<44} {'range':>7} {'runs':>5} {'p50':>9} {'p99':>9} {'verdict':>8}")
            for days in (7, 30):
                window = {"start": (today + timedelta(days=1 - days)).isoformat(), "end": _after(today)}
                top = await client.get("/console/conversations", params=window)
                conversation = _first_conversation(top.text)
                pages: list[tuple[str, str, dict[str, str]]] = [
                    ("overview (stacked by model)", "/console", window),
                    ("overview (stacked by procedure)", "/console", {**window, "by": "procedure"}),
                    ("overview, Europe/Berlin", "/console", {**window, "tz": "Europe/Berlin"}),
                    ("conversations (top 100 in range)", "/console/conversations", window),
                    ("conversation (100 calls)", f"/console/conversations/{conversation}", window),
                    ("users (500 most expensive)", "/console/users", window),
                    ("models", "/console/models", window),
                    ("procedures", "/console/procedures", window),
                    ("budgets", "/console/budgets", window),
                    ("alerts", "/console/alerts", window),
                    ("models CSV export", "/console/models", {**window, "export": "models"}),
                ]
                for name, path, params in pages:
                    p50, p99 = await _time(client, path, params, repeat)
                    verdict = "met" if p50 < TARGET_MS else "MISSED"
                    print(f"{name:<44} {days:>5} d {repeat:>5} {p50:>9.1f} {p99:>9.1f} {verdict:>8}", flush=True)
    finally:
        server.should_exit = True
        await task


def _after(day: date) -> str:
    return (day + timedelta(days=1)).isoformat()


def _first_conversation(page: str) -> str:
    marker = "/console/conversations/"
    start = page.index(marker, page.index('id="table-conversations"')) + len(marker)
    return page[start : start + 36]


async def _time(client: Any, path: str, params: dict[str, str], repeat: int) -> tuple[float, float]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = await client.get(path, params=params)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage rows to generate (default 1,000,000)")
    parser.add_argument("--days", type=int, default=90, help="the rows span this many days up to now")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per page and range")
    parser.add_argument("--database", default="tollbooth_bench", help="the database (admin_bench.py's by default)")
    parser.add_argument("--reuse", action="store_true", help="keep an existing bench database instead of refilling")
    add_database_argument(parser)
    args = parser.parse_args()

    admin_url = server_url(args.database_url)
    url = with_database(admin_url, args.database)
    os.environ["DATABASE_URL"] = url  # read by piccolo_conf when the server modules are first imported

    async def run() -> None:
        reused = await _create_database(admin_url, args.database, reuse=args.reuse)
        from server.migrations import migrate_forwards

        await migrate_forwards()
        if reused:
            _progress(f"reusing database {args.database}")
        else:
            _progress(f"filling database {args.database}: {args.rows:,} usage rows")
            end = datetime.now(UTC).replace(microsecond=0)
            await fill(url, rows=args.rows, conversations=10_000, users=1_000, days=args.days, end=end)
        await bench(url, repeat=args.repeat)

    asyncio.run(run())


if __name__ == "__main__":
    main()
