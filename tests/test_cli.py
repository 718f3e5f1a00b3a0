"""The command line, run as a user runs it: ``python -m server`` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.database import embedded_database_url

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture
def served(embedded_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    port = _free_port()
    env = {**embedded_env, "PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not answer /healthz within 60 s")
        yield base, env
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_answers_healthz_on_the_embedded_database(served: tuple[str, dict[str, str]]) -> None:
    base, _ = served
    response = httpx.get(f"{base}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_stopping_the_server_stops_the_embedded_database(embedded_env: dict[str, str]) -> None:
    port = _free_port()
    env = {**embedded_env, "PORT": str(port)}
    log = Path(env["DATA_DIR"]).parent / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=output, stderr=output)
    pid_file = Path(env["DATA_DIR"]) / "postgres" / "postmaster.pid"
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        postmaster = int(pid_file.read_text().split()[0])
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()
    deadline = time.monotonic() + 15
    while _running(postmaster):
        assert time.monotonic() < deadline, "the embedded PostgreSQL outlived the server"
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_create_user_beside_a_running_server_shares_its_embedded_database(
    served: tuple[str, dict[str, str]],
) -> None:
    _, env = served
    result = _run("create-user", "--name", "carol", "--admin", env=env)
    assert result.returncode == 0, result.stderr
    key_line = next(line for line in result.stdout.splitlines() if line.startswith("API key"))
    api_key = key_line.rsplit(" ", 1)[1]
    assert api_key.startswith("tb_")

    import asyncio

    import asyncpg

    from server.users import hash_api_key

    async def stored() -> list[asyncpg.Record]:
        url = embedded_database_url(Path(env["DATA_DIR"]) / "postgres")
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetch("SELECT name, is_admin, api_key_hash FROM users")
        finally:
            await connection.close()

    rows = asyncio.run(stored())
    assert [(r["name"], r["is_admin"], r["api_key_hash"]) for r in rows] == [("carol", True, hash_api_key(api_key))]
    assert api_key not in str(rows)


def test_unreachable_database_is_one_clear_line_and_a_nonzero_exit() -> None:
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere"}
    result = _run("migrate", env=env)
    assert result.returncode == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("tollbooth:")]
    assert len(errors) == 1, result.stderr
    assert "DATABASE_URL" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_bad_setting_is_one_clear_line_and_a_nonzero_exit() -> None:
    result = _run("migrate", env={**os.environ, "PORT": "0"})
    assert result.returncode == 2
    assert result.stderr.strip() == "tollbooth: configuration error: PORT must be between 1 and 65535, got 0"


def test_migrate_applies_and_reports_an_up_to_date_schema() -> None:
    result = _run("migrate", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_create_user_rejects_an_empty_name() -> None:
    result = _run("create-user", "--name", "  ", env=dict(os.environ))
    assert result.returncode == 2
    assert "non-empty name" in result.stderr


def test_a_bad_price_file_is_one_clear_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[[models]]\nprovider = "openai"\nmodel = "gpt-4o"\neffective_from = 2026-01-01\ninput = -1\n')
    result = _run("serve", env={**os.environ, "PRICE_FILE": str(prices)})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("tollbooth:")]
    assert len(errors) == 1, result.stderr
    assert "PRICE_FILE" in errors[0]
    assert "gpt-4o" in errors[0]
    assert "Traceback" not in result.stderr
