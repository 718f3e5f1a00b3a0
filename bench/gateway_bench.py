"""Benchmark: Tollbooth beside the provider alone and beside LiteLLM's proxy, against one fake provider.

One command runs the side-by-side of issue 15. The provider simulator, ``python -m server`` and (when installed)
LiteLLM's proxy run as separate processes on loopback; one aiohttp load generator drives each path with the same chat
request, at concurrency 1 and 16:

- ``provider``: the simulator's OpenAI endpoint directly (``POST /openai/v1/chat/completions``): the floor;
- ``litellm``: LiteLLM's proxy, one worker, no database (so no spend logging), routing ``gpt-4o-mini`` to the
  simulator;
- ``tollbooth``: ``chat.sendMessage`` with full transactional logging (the claim, the usage row, the conversation, its
  messages and totals, in PostgreSQL).

For each it prints requests/s, p50 and p99 latency, and the CPU time the serving process spent per call (user + system,
from ``/proc``; for ``provider`` that is the simulator's), then the ratios: the p50 each gateway adds to the provider's
at concurrency 1, and Tollbooth's requests/s over LiteLLM's at 16.

    python bench/gateway_bench.py [--requests 2000] [--rounds 1] [--database-url URL] [--litellm PATH] [--budget]

``--rounds N`` repeats every row N times, interleaved (provider, litellm, tollbooth, provider, ...), and reports each
row's median: the development machine is shared and runs differ. The LiteLLM proxy is looked for as ``--litellm``,
else ``LITELLM``, else ``litellm`` on ``PATH``; it is optional (not a dependency of Tollbooth): without it, or when it
does not start offline, the bench says why and measures the other two. Install it in a virtual environment of its own
(``python -m venv /tmp/litellm && /tmp/litellm/bin/pip install 'litellm[proxy]'``, then ``--litellm
/tmp/litellm/bin/litellm``): it pins versions of shared packages that Tollbooth's environment does not use.
The database is created and dropped as ``chat_bench.py`` does it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
from bench_database import add_argument as add_database_argument
from bench_database import server_url
from chat_bench import cpu_seconds, drive, free_port, percentile, running_service

BENCH_DATABASE = "tollbooth_bench_gateway"
MODEL = "gpt-4o-mini"
MESSAGE = "What does a token cost?"
OPENAI_BODY = f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"{MESSAGE}"}}]}}'.encode()
CONCURRENCY = (1, 16)
LITELLM_CONFIG = """model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: sk-bench
litellm_settings:
  drop_params: true
  telemetry: false
"""


@dataclass(frozen=True)
class Target:
    """One way to send the chat request: where, how, and which process serves it (for its CPU time)."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]
    pid: int
    expect: bytes


@dataclass(frozen=True)
class Row:
    rate: float
    p50: float
    p99: float
    cpu_ms: float
    """CPU time of the serving process per call, in milliseconds."""


def find_litellm(given: str | None) -> str | None:
    return given or os.environ.get("LITELLM") or shutil.which("litellm")


@contextmanager
def litellm_proxy(executable: str, openai_url: str) -> Iterator[tuple[str, int] | str]:
    """LiteLLM's proxy, one worker, no database, routing ``MODEL`` to the simulator: yields (url, pid) when it
    answers, else why it did not start."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "litellm.yaml"
        config.write_text(LITELLM_CONFIG.format(model=MODEL, api_base=openai_url))
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "PYTHONPATH") and not key.startswith("VIRTUAL_ENV")
        }
        # Offline: the bundled model cost map instead of fetching it; no telemetry; quiet logs; no master key (no
        # database to check keys against, and its fastest path).
        env |= {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        }
        log = Path(directory) / "litellm.log"
        with log.open("wb") as output:
            command = [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
            process = subprocess.Popen([*command, "--num_workers", "1"], env=env, stdout=output, stderr=output)
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and process.poll() is None:
                    try:
                        if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.5)
                else:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    yield f"LiteLLM's proxy did not start ({' / '.join(tail) or 'no output'})"
                    return
                yield url, process.pid
            finally:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


async def run_row(client: aiohttp.ClientSession, path: Target, total: int, concurrency: int) -> Row:
    async def call() -> None:
        async with client.post(path.url, data=path.body, headers=path.headers) as response:
            payload = await response.read()
            if response.status != 200 or path.expect not in payload:
                raise SystemExit(f"{path.name}: HTTP {response.status}: {payload[:300].decode(errors='replace')}")

    await drive(call, 4 * concurrency + 20, concurrency)  # warm up: connections, pools, prepared statements
    cpu = cpu_seconds(path.pid)
    rate, latencies = await drive(call, total, concurrency)
    cpu_ms = (cpu_seconds(path.pid) - cpu) * 1000 / total
    return Row(rate, percentile(latencies, 0.5), percentile(latencies, 0.99), cpu_ms)


async def measure(paths: list[Target], requests: int, rounds: int) -> dict[tuple[str, int], Row]:
    samples: dict[tuple[str, int], list[Row]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        for round_ in range(rounds):
            for concurrency in CONCURRENCY:
                for path in paths:
                    row = await run_row(client, path, requests, concurrency)
                    samples.setdefault((path.name, concurrency), []).append(row)
                    if rounds > 1:
                        print(
                            f"  round {round_ + 1} c={concurrency:<2} {path.name:<9} {row.rate:7.0f} req/s"
                            f"  p50 {row.p50:6.2f}  p99 {row.p99:7.2f} ms  cpu {row.cpu_ms:5.2f} ms/call",
                            flush=True,
                        )
    return {
        key: Row(*(statistics.median(getattr(row, name) for row in rows) for name in ("rate", "p50", "p99", "cpu_ms")))
        for key, rows in samples.items()
    }


def report(results: dict[tuple[str, int], Row], names: list[str]) -> None:
    print()
    print("| path | c=1 req/s | c=1 p50 ms | c=16 req/s | c=16 p50 ms | c=16 p99 ms | CPU ms/call (c=1, c=16) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        one, many = results[(name, 1)], results[(name, 16)]
        print(
            f"| {name} | {one.rate:.0f} | {one.p50:.2f} | {many.rate:.0f} | {many.p50:.1f} | {many.p99:.1f} "
            f"| {one.cpu_ms:.2f}, {many.cpu_ms:.2f} |"
        )
    floor = results[("provider", 1)].p50
    tollbooth_added = results[("tollbooth", 1)].p50 - floor
    print()
    print(f"added p50 at c=1 over the provider: tollbooth {tollbooth_added:.2f} ms", end="")
    if "litellm" in names:
        litellm_added = results[("litellm", 1)].p50 - floor
        ratio = results[("tollbooth", 16)].rate / results[("litellm", 16)].rate
        print(f", litellm {litellm_added:.2f} ms (tollbooth/litellm {tollbooth_added / litellm_added:.2f})")
        print(f"requests/s at c=16: tollbooth/litellm {ratio:.2f}")
    else:
        print()
    print(
        f"tollbooth CPU per call: {results[('tollbooth', 1)].cpu_ms:.2f} ms at c=1, "
        f"{results[('tollbooth', 16)].cpu_ms:.2f} ms at c=16"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="calls per row (default 2000)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; rows report medians")
    parser.add_argument("--litellm", help="LiteLLM's proxy executable (default: LITELLM, else litellm on PATH)")
    parser.add_argument("--no-litellm", action="store_true", help="measure the provider and Tollbooth only")
    parser.add_argument("--budget", action="store_true", help="run Tollbooth's calls under a global hard budget")
    add_database_argument(parser)
    args = parser.parse_args()
    with running_service(server_url(args.database_url), BENCH_DATABASE, budget=args.budget) as service:
        provider = Target(
            "provider",
            f"{service.openai_url}/chat/completions",
            OPENAI_BODY,
            {"authorization": "Bearer sk-bench", "content-type": "application/json"},
            service.simulator_pid,
            b'"usage"',
        )
        tollbooth = Target(
            "tollbooth",
            f"{service.url}/trpc/chat.sendMessage",
            f'{{"message":"{MESSAGE}","model":"{MODEL}"}}'.encode(),
            {"authorization": f"Bearer {service.api_key}", "content-type": "application/json"},
            service.pid,
            b'"reply"',
        )
        executable = None if args.no_litellm else find_litellm(args.litellm)
        with litellm_proxy(executable, service.openai_url) if executable else _absent(args.no_litellm) as litellm:
            paths = [provider, tollbooth]
            if isinstance(litellm, str):
                print(f"litellm: skipped: {litellm}")
            else:
                url, pid = litellm
                headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
                paths.insert(1, Target("litellm", f"{url}/chat/completions", OPENAI_BODY, headers, pid, b'"usage"'))
            print(
                f"{args.requests} calls per row, {args.rounds} round(s); every process on loopback, "
                "sharing this machine's cores",
                flush=True,
            )
            results = asyncio.run(measure(paths, args.requests, args.rounds))
            report(results, [path.name for path in paths])


@contextmanager
def _absent(asked: bool) -> Iterator[str]:
    yield "--no-litellm" if asked else "no LiteLLM proxy found (--litellm, LITELLM, or litellm on PATH)"


if __name__ == "__main__":
    main()
