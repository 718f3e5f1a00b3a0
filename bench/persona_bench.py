"""Benchmark: personas.generate for 12 personas with pictures, cold and cached, and where the time goes.

Starts the provider simulator and ``python -m server`` (``LOG_LEVEL=INFO``, request de-duplication off so that a
repeat reaches the persona-set cache) as separate processes on loopback, then, ``--runs`` times:

- ``cold``: a new lead (a miss): the structured text call, 12 pictures (``PERSONA_IMAGE_CONCURRENCY`` at a time),
  each stored (local media folder, or moto's S3 server with ``--s3``), 13 usage rows, the set cached;
- ``cached``: the same request again: one lookup, one ``cache_hit`` row, the pictures' URLs made again;
- ``replay``: the cold request once more with an ``idempotencyKey`` already used (the machinery request
  de-duplication runs on): one claim statement, the stored body.

Where a cold call's time goes comes from the server's own summary log line (``tollbooth.personas``, INFO): the text
call (its provider part, the rest being the claim and the recording transaction), the pictures' wall time, and,
summed over the pictures, their provider time, their claims and records, and storage.

    python bench/persona_bench.py [--runs 10] [--concurrency 4] [--s3] [--database-url URL]

The simulator answers at once (a 64x64 PNG per picture), so this is Tollbooth's own cost; a real image model takes
seconds per picture, which the cache saves. A fresh database ``tollbooth_bench_personas`` is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from bench_database import add_argument as add_database_argument
from bench_database import server_url, with_database
from chat_bench import ROOT, background, free_port, recreate_database, wait_for

BENCH_DATABASE = "tollbooth_bench_personas"
PERSONAS = 12
_SUMMARY = re.compile(r"personas\.generate: .*cache (?P<cache>\w+), (?P<total>[0-9.]+) ms \((?P<timings>[^)]*)\)")
_TIMING = re.compile(r"(?P<name>\w+)=(?P<ms>[0-9.]+)ms")


def text_reply(run: int) -> str:
    """Twelve distinct personas (distinct pictures, so storage writes twelve objects)."""
    personas = [
        {
            "name": f"Bench Persona {run}-{i}",
            "job_title": "Operations lead",
            "age": 30 + i,
            "description": "Keeps the warehouse running.",
            "goals": ["Fewer stoppages"],
            "pain_points": ["Manual counts"],
            "appearance": f"Wears badge {run}-{i}.",
        }
        for i in range(PERSONAS)
    ]
    return json.dumps({"personas": personas})


@contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    """moto's standalone S3 server with one bucket; the settings that point the service at it."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"{endpoint}/moto-api/", process, "moto")
        credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket="bench")
        yield {
            "S3_BUCKET": "bench",
            "S3_ENDPOINT_URL": endpoint,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "bench",
            "S3_SECRET_ACCESS_KEY": "bench",
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


async def measure(args: argparse.Namespace, server: str, api_key: str, simulator: str, log: Path) -> None:
    headers = {"authorization": f"Bearer {api_key}"}
    rows: dict[str, list[float]] = {"cold": [], "cached": [], "replay": []}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=120) as client:

        async def call(body: dict[str, Any], marker: str | None) -> float:
            started = time.perf_counter()
            response = await client.post("/trpc/personas.generate", json=body)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"personas.generate failed: {response.status_code} {response.text}")
            if marker is not None and f'"{marker}":true' not in response.text:
                raise SystemExit(f"expected {marker}")
            return elapsed

        for run in range(-1, args.runs):  # run -1 warms up (connections, price lookups, SDK clients)
            await client.post(
                f"{simulator}/_sim/script",
                json=[{"provider": "openai", "reply": text_reply(run)}],
            )
            body = {
                "leadData": {"company": f"Bench {run}", "employees": 100 + run},
                "config": {"numPersonas": PERSONAS},
                "model": "gpt-4o-mini",
                "imageModel": "gpt-image-1.5",
            }
            cold = await call({**body, "idempotencyKey": f"bench-{run}"}, None)
            cached = await call(body, "fromCache")
            replay = await call({**body, "idempotencyKey": f"bench-{run}"}, "fromIdempotentCache")
            if run >= 0:
                rows["cold"].append(cold)
                rows["cached"].append(cached)
                rows["replay"].append(replay)
    await asyncio.sleep(0.2)  # the server's last log lines
    lines = (await asyncio.to_thread(log.read_text)).splitlines()
    breakdown: dict[str, list[float]] = {}
    summaries = [m for m in map(_SUMMARY.search, lines) if m and m["cache"] == "miss"]
    for summary in summaries[1:]:  # the warm-up's left out
        for timing in _TIMING.finditer(summary["timings"]):
            breakdown.setdefault(timing["name"], []).append(float(timing["ms"]))
    storage = "moto S3 (loopback)" if args.s3 else "local media folder"
    print(
        f"personas.generate, {PERSONAS} personas with pictures, {args.runs} runs, concurrency {args.concurrency}, "
        f"storage: {storage}"
    )
    print(f"{'path':>8} {'p50 ms':>9} {'min ms':>9} {'max ms':>9}")
    for name, values in rows.items():
        print(f"{name:>8} {statistics.median(values):>9.1f} {min(values):>9.1f} {max(values):>9.1f}")
    print("cold call, median ms by phase (server log):")
    text, text_provider = statistics.median(breakdown["text"]), statistics.median(breakdown["text_provider"])
    images = statistics.median(breakdown["images"])
    calls, provider = (
        statistics.median(breakdown["image_calls_sum"]),
        statistics.median(breakdown["image_provider_sum"]),
    )
    storage_ms = statistics.median(breakdown["storage_sum"])
    print(
        f"  text call            {text:8.1f}  (provider {text_provider:.1f}, claim + record {text - text_provider:.1f})"
    )
    print(f"  pictures, wall       {images:8.1f}")
    print(f"    summed: provider   {provider:8.1f}")
    print(f"    summed: claim + record (database) {calls - provider:8.1f}")
    print(f"    summed: storage    {storage_ms:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="cold/cached pairs (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="PERSONA_IMAGE_CONCURRENCY (default 4)")
    parser.add_argument("--s3", action="store_true", help="store the pictures in moto's S3 server, not files")
    add_database_argument(parser)
    args = parser.parse_args()
    admin_url = server_url(args.database_url)
    asyncio.run(recreate_database(admin_url, BENCH_DATABASE))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="persona-bench-") as directory:
        simulator_port, server_port = free_port(), free_port()
        simulator = f"http://127.0.0.1:{simulator_port}"
        env = {
            **os.environ,
            "DATABASE_URL": with_database(admin_url, BENCH_DATABASE),
            "DATA_DIR": directory,
            "PORT": str(server_port),
            "LOG_LEVEL": "INFO",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": f"{simulator}/openai/v1",
            "PROVIDER_MAX_RETRIES": "0",
            "DEDUP_WINDOW_SECONDS": "0",
            "PERSONA_IMAGE_CONCURRENCY": str(args.concurrency),
        }
        if args.s3:
            env.update(stack.enter_context(moto_server()))
        try:
            subprocess.run(
                [sys.executable, "-m", "server", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True
            )
            api_key = subprocess.run(
                [sys.executable, "-m", "server", "create-user", "--name", "bench", "--quiet"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            stack.enter_context(
                background(
                    [sys.executable, "-m", "server.simulator", "--port", str(simulator_port)],
                    env,
                    f"{simulator}/_sim/requests",
                    "the simulator",
                )
            )
            log = Path(directory) / "server.log"
            with log.open("wb") as sink:
                server = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=sink, stderr=sink)
                try:
                    wait_for(f"http://127.0.0.1:{server_port}/healthz", server, "the server")
                    asyncio.run(measure(args, f"http://127.0.0.1:{server_port}", api_key, simulator, log))
                finally:
                    server.terminate()
                    server.wait(timeout=30)
        finally:
            asyncio.run(recreate_database(admin_url, BENCH_DATABASE, drop_only=True))


if __name__ == "__main__":
    main()
