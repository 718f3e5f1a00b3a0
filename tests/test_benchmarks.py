"""The benchmarks run as a newcomer runs them: on the embedded PostgreSQL by default, saying which database they use."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from server.database import redact

ROOT = Path(__file__).resolve().parent.parent


def _bench(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_chat_bench_uses_the_embedded_postgres_by_default_and_says_so(embedded_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BENCH_DATABASE_URL")}
    env["DATA_DIR"] = str(embedded_dir / ".data")
    result = _bench("chat_bench.py", "--requests", "5", "--concurrency", "1", env=env)
    assert result.returncode == 0, result.stderr
    pgdata = (embedded_dir / ".data" / "postgres").resolve()
    assert result.stdout.splitlines()[0] == (
        f"database: embedded PostgreSQL in {pgdata} (--database-url or BENCH_DATABASE_URL to use another)"
    )
    assert "server/direct throughput ratio" in result.stdout


def test_cache_bench_measures_a_hit_and_a_replay_beside_the_provider_call() -> None:
    server = os.environ["DATABASE_URL"]  # the test session's database; the bench creates its own beside it
    env = {k: v for k, v in os.environ.items() if k != "BENCH_DATABASE_URL"}
    result = _bench("cache_bench.py", "--database-url", server, "--requests", "5", "--concurrency", "1", env=env)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert {row[1] for row in rows if len(row) == 5 and row[0] == "1"} == {"direct", "provider", "hit", "replay"}
    assert "hit p50" in result.stdout
    assert "replay p50" in result.stdout


def test_admin_bench_uses_the_server_it_is_given_and_says_so() -> None:
    server = os.environ["DATABASE_URL"]  # the test session's database; the bench creates its own beside it
    database = f"tollbooth_bench_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "BENCH_DATABASE_URL"}
    args = ("--rows", "500", "--conversations", "10", "--users", "3", "--days", "2", "--repeat", "1", "--no-plans")
    try:
        result = _bench("admin_bench.py", "--database-url", server, "--database", database, *args, env=env)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"database: PostgreSQL at {redact(server)} (--database-url or BENCH_DATABASE_URL)"
        assert any(line.startswith("getConversationCost") for line in lines), result.stdout
    finally:
        asyncio.run(_drop(server, database))


async def _drop(server: str, database: str) -> None:
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


def test_gateway_bench_measures_the_provider_and_the_service_and_says_when_litellm_is_skipped() -> None:
    server = os.environ["DATABASE_URL"]  # the test session's database; the bench creates its own beside it
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_DATABASE_URL", "LITELLM")}
    result = _bench("gateway_bench.py", "--database-url", server, "--requests", "5", "--no-litellm", env=env)
    assert result.returncode == 0, result.stderr
    assert "litellm: skipped: --no-litellm" in result.stdout
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["provider", "tollbooth"]
    assert "added p50 at c=1 over the provider: tollbooth" in result.stdout
    assert "tollbooth CPU per call:" in result.stdout
