"""Benchmark: what a response-cache hit and an idempotent replay cost, beside the provider call they save.

Starts the provider simulator and ``python -m server`` as separate processes on loopback (as ``chat_bench.py``), then
drives ``chat.sendMessage`` over HTTP four ways at each concurrency, and prints requests/s and p50/p99 latency:

- ``direct``: the provider call alone, made with the openai SDK against the simulator (no server);
- ``provider``: ``chat.sendMessage`` without a cache: claim, provider call, recording transaction;
- ``hit``: the same request with ``cache: {mode: "use"}``, answered from ``response_cache`` (a ``cache_hit`` usage
  row, its conversation and messages written in one transaction; no claim, no provider call);
- ``replay``: the same request with one ``idempotencyKey``, replayed from ``idempotency_keys`` (one claim statement
  and the replay counter; nothing else is written).

    python bench/cache_bench.py [--requests 2000] [--concurrency 1 16] [--database-url URL]

The simulator answers in well under a millisecond, so ``provider`` is the cheapest a provider call can be; a real one
takes hundreds of milliseconds more, which a hit and a replay save as well. A fresh database
``tollbooth_bench_cache`` is created for the run and dropped afterwards (see ``chat_bench.py``).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import openai
from bench_database import add_argument as add_database_argument
from bench_database import server_url
from chat_bench import drive, percentile, running_service

BENCH_DATABASE = "tollbooth_bench_cache"
MESSAGE = "What does a token cost?"


async def measure(args: argparse.Namespace, server: str, api_key: str, openai_url: str) -> None:
    direct = openai.AsyncOpenAI(api_key="sk-bench", base_url=openai_url, max_retries=0)
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    bodies = {
        "provider": f'{{"message":"{MESSAGE}","model":"gpt-4o-mini"}}'.encode(),
        "hit": f'{{"message":"{MESSAGE}","model":"gpt-4o-mini","cache":{{"mode":"use"}}}}'.encode(),
        "replay": f'{{"message":"{MESSAGE}","model":"gpt-4o-mini","idempotencyKey":"bench-replay"}}'.encode(),
    }
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=server, connector=connector) as client:

        def via_server(path: str) -> Callable[[], Awaitable[None]]:
            body = bodies[path]

            async def call() -> None:
                async with client.post("/trpc/chat.sendMessage", data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        raise SystemExit(f"{path}: chat.sendMessage failed: {response.status} {payload.decode()}")
                    if path == "hit" and b'"fromCache":true' not in payload:
                        raise SystemExit("hit: the answer did not come from the cache")
                    if path == "replay" and b'"fromIdempotentCache":true' not in payload:
                        raise SystemExit("replay: the answer was not a replay")

            return call

        async def direct_call() -> None:
            await direct.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": MESSAGE}])

        # The first call of each stores what the others replay (it is itself a provider call, left out of the rows).
        for path in ("hit", "replay"):
            async with client.post("/trpc/chat.sendMessage", data=bodies[path], headers=headers) as response:
                await response.read()
        paths = {
            "direct": direct_call,
            "provider": via_server("provider"),
            "hit": via_server("hit"),
            "replay": via_server("replay"),
        }
        print(f"{'concurrency':>11} {'path':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for concurrency in args.concurrency:
            results = {}
            for name, call in paths.items():
                await drive(call, 4 * concurrency, concurrency)  # warm up at this concurrency
                rate, latencies = await drive(call, args.requests, concurrency)
                results[name] = (rate, percentile(latencies, 0.5), percentile(latencies, 0.99))
                print(f"{concurrency:>11} {name:>8} {rate:>8.0f} {results[name][1]:>8.2f} {results[name][2]:>8.2f}")
            for name in ("hit", "replay"):
                cheaper = results[name][1] < results["provider"][1]
                print(
                    f"{concurrency:>11} {name:>8} p50 {results[name][1] / results['provider'][1]:.2f}x the provider "
                    f"call's, {results[name][0] / results['provider'][0]:.2f}x its throughput"
                    + ("" if cheaper else "  (NOT cheaper)")
                )
    await direct.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    add_database_argument(parser)
    args = parser.parse_args()
    with running_service(server_url(args.database_url), BENCH_DATABASE) as service:
        print(f"{args.requests} calls per row; server and simulator are separate processes on loopback")
        asyncio.run(measure(args, service.url, service.api_key, service.openai_url))


if __name__ == "__main__":
    main()
