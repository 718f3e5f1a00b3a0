"""The command line, run as a user runs it: ``python -m server`` in a subprocess; and the user operations behind it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.database import embedded_database_url
from tests.conftest import ServedApp

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
def embedded_env(embedded_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATA_DIR"] = str(embedded_dir / ".data")  # as in a checkout: README's commands run in embedded_dir
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


def test_a_default_model_of_no_provider_is_one_line_naming_the_variable() -> None:
    result = _run("serve", env={**os.environ, "DEFAULT_MODEL": "llama3"})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("tollbooth: configuration error: DEFAULT_MODEL must be a model of a known family: gpt-*")
    assert line.endswith("got 'llama3'")


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


def _lines(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


def test_serve_flags_override_the_environment_and_the_start_up_log_states_each_fact_once(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    port, ignored_port = _free_port(), _free_port()
    env = {**embedded_env, "PORT": str(ignored_port), "HOST": "localhost"}
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        assert not _answers(f"http://127.0.0.1:{ignored_port}/healthz")
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert _lines(text, "Uvicorn running on") == [
        f"INFO:     Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)"
    ], text
    assert len(_lines(text, "Started server process")) == 1, text
    pgdata = Path(env["DATA_DIR"]).resolve() / "postgres"
    [database] = _lines(text, "database: ")
    assert f"embedded PostgreSQL in {pgdata} (DATABASE_URL is not set)" in database
    [migrations] = _lines(text, "migrations: ")
    assert re.search(r"migrations: applied (\d+) \(.*\), \1 in all$", migrations), migrations
    [providers] = _lines(text, "providers: ")
    assert "openai, anthropic and gemini: the built-in simulator (OFFLINE MODE" in providers
    assert text.index("database: ") < text.index("migrations: ") < text.index("providers: ")


def test_describe_providers_names_each_real_provider_by_host_and_the_ones_not_configured() -> None:
    from server.cli import describe_providers
    from server.settings import Settings

    online = Settings.from_env(
        {
            "OPENAI_API_KEY": "sk-1",
            "OPENAI_BASE_URL": "https://user:secret@proxy.internal:8443/v1",
            "ANTHROPIC_API_KEY": "a",
        }
    )
    assert describe_providers(online) == (
        "openai: proxy.internal:8443, anthropic: api.anthropic.com, gemini: not configured (GEMINI_API_KEY is not set)"
    )
    gemini = Settings.from_env({"GEMINI_API_KEY": "g"})
    assert describe_providers(gemini).endswith("gemini: generativelanguage.googleapis.com")
    assert describe_providers(Settings.from_env({})) == "openai, anthropic and gemini: the built-in simulator"


def test_a_bad_port_flag_is_refused_by_name() -> None:
    result = _run("--port", "70000", env=dict(os.environ))
    assert result.returncode == 2
    assert "argument --port: must be between 1 and 65535, got 70000" in result.stderr
    result = _run("--port", "8001", "migrate", env=dict(os.environ))
    assert result.returncode == 2
    assert "--host and --port apply to serve, not to migrate" in result.stderr


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_the_readme_psql_command_reaches_the_embedded_database(served: tuple[str, dict[str, str]]) -> None:
    _, env = served
    created = _run("create-user", "--name", "dora", "--quiet", env=env)
    assert created.returncode == 0, created.stderr
    readme = (ROOT / "README.md").read_text()
    [command] = [line for line in readme.splitlines() if line.startswith('psql "postgresql://postgres@/tollbooth')]
    result = subprocess.run(
        f"{command} -Atc 'SELECT name FROM users'",
        shell=True,
        cwd=Path(env["DATA_DIR"]).parent,  # the README's $PWD: the directory holding .data
        env={**env, "PGCONNECT_TIMEOUT": "5"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["dora"]


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_create_user_refuses_a_duplicate_name_unless_asked() -> None:
    env, name = dict(os.environ), _unique("alice")
    assert _run("create-user", "--name", name, env=env).returncode == 0
    duplicate = _run("create-user", "--name", f"  {name} ", env=env)
    assert duplicate.returncode == 2
    assert f"tollbooth: a user named {name!r} already exists" in duplicate.stderr
    assert "--allow-duplicate" in duplicate.stderr
    assert "API key" not in duplicate.stdout
    allowed = _run("create-user", "--name", name, "--allow-duplicate", "--json", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["name"] == name


def test_create_user_quiet_prints_only_the_key_and_json_one_object() -> None:
    env = dict(os.environ)
    quiet = _run("create-user", "--name", _unique("scripted"), "--quiet", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert re.fullmatch(r"tb_[A-Za-z0-9_-]{43}\n", quiet.stdout), quiet.stdout
    name = _unique("machine")
    as_json = _run("create-user", "--name", name, "--admin", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    created = json.loads(as_json.stdout)
    assert set(created) == {"userId", "name", "isAdmin", "apiKey", "keyFingerprint"}
    assert (created["name"], created["isAdmin"]) == (name, True)
    assert created["keyFingerprint"] == hashlib.sha256(created["apiKey"].encode()).hexdigest()[:12]


def test_list_users_shows_ids_names_roles_and_fingerprints_never_keys() -> None:
    env = dict(os.environ)
    made = [
        json.loads(_run("create-user", "--name", _unique(role), *flags, "--json", env=env).stdout)
        for role, flags in (("user", ()), ("admin", ("--admin",)))
    ]
    listed = _run("list-users", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["id", "name", "role", "created", "(UTC)", "key", "fingerprint"]
    for user, role in zip(made, ("user", "admin"), strict=True):
        [line] = _lines(listed.stdout, user["userId"])
        assert line.split()[:3] == [user["userId"], user["name"], role]
        assert line.split()[-1] == user["keyFingerprint"]
        assert user["apiKey"] not in listed.stdout
    as_json = _run("list-users", "--json", env=env)
    by_id = {user["userId"]: user for user in json.loads(as_json.stdout)}
    for user in made:
        listed_user = by_id[user["userId"]]
        assert set(listed_user) == {"userId", "name", "isAdmin", "createdAt", "keyFingerprint"}
        assert listed_user["keyFingerprint"] == user["keyFingerprint"]
        assert user["apiKey"] not in as_json.stdout


def test_user_commands_name_what_is_wrong() -> None:
    env = dict(os.environ)
    missing = _run("revoke-key", "nobody-by-this-name", env=env)
    assert (missing.returncode, missing.stderr.splitlines()[-1]) == (
        2,
        "tollbooth: no user is named 'nobody-by-this-name' (python -m server list-users shows them)",
    )
    user_id = uuid.uuid4()
    unknown_id = _run("rotate-key", str(user_id), env=env)
    assert (unknown_id.returncode, unknown_id.stderr.splitlines()[-1]) == (
        2,
        f"tollbooth: no user has the id {user_id}",
    )
    name = _unique("twin")
    ids = [
        json.loads(_run("create-user", "--name", name, "--allow-duplicate", "--json", env=env).stdout)["userId"]
        for _ in range(2)
    ]
    ambiguous = _run("revoke-key", name, env=env)
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.splitlines()[-1] == (
        f"tollbooth: 2 users are named {name!r} ({ids[0]}, {ids[1]}): name one by its id"
    )
    by_id = _run("revoke-key", ids[1], env=env)
    assert by_id.returncode == 0, by_id.stderr


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def _whoami(app: ServedApp, api_key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=app.url) as http:
        return await http.get("/trpc/system.whoami", headers={"authorization": f"Bearer {api_key}"})


async def test_revoke_key_stops_the_key_authenticating(app_server: ServedApp) -> None:
    code, api_key, _ = await _cli("create-user", "--name", "eve", "--quiet")
    assert code == 0
    code, stdout, stderr = await _cli("revoke-key", "eve")
    assert code == 0, stderr
    assert "revoked the API key of 'eve'" in stdout
    assert "a running server stops accepting it within 30 s" in stdout
    assert (await _whoami(app_server, api_key.strip())).status_code == 401
    code, listed, _ = await _cli("list-users")
    [line] = _lines(listed, " eve ")
    assert line.split()[-1] == "revoked"
    code, stdout, _ = await _cli("revoke-key", "eve")
    assert (code, "was already revoked" in stdout) == (0, True)


async def test_rotate_key_prints_a_new_key_once_and_the_old_one_stops_working(app_server: ServedApp) -> None:
    code, old_key, _ = await _cli("create-user", "--name", "frank", "--quiet")
    assert code == 0
    code, stdout, stderr = await _cli("rotate-key", "frank")
    assert code == 0, stderr
    [key_line] = _lines(stdout, "^API key")
    new_key = key_line.rsplit(" ", 1)[1]
    assert new_key.startswith("tb_")
    assert new_key != old_key.strip()
    assert stdout.count(new_key) == 1
    assert (await _whoami(app_server, old_key.strip())).status_code == 401
    whoami = await _whoami(app_server, new_key)
    assert whoami.json()["result"]["data"]["name"] == "frank"


async def test_a_revoked_key_authenticates_no_longer_than_the_auth_cache_keeps_it(db: None) -> None:
    from server.auth import DatabaseAuthenticator
    from server.users import create_user, revoke_key
    from tests.conftest import app_database

    user = await create_user("grace")
    authenticator = DatabaseAuthenticator(app_database(), ttl=0.3)
    assert (await authenticator.authenticate(user.api_key)) is not None
    await revoke_key(str(user.id))
    assert (await authenticator.authenticate(user.api_key)) is not None  # cached: the bound the CLI states
    await asyncio.sleep(0.35)
    assert (await authenticator.authenticate(user.api_key)) is None
    assert (await DatabaseAuthenticator(app_database()).authenticate(user.api_key)) is None


async def test_user_names_are_unique_unless_a_duplicate_is_asked_for(db: None) -> None:
    from server.users import UserError, create_user, find_user, list_users

    first = await create_user("heidi")
    with pytest.raises(UserError, match="a user named 'heidi' already exists"):
        await create_user("heidi", is_admin=True)
    assert [user.id for user in await list_users()] == [first.id]
    assert (await find_user("heidi")).id == first.id
    await create_user("heidi", allow_duplicate=True)
    with pytest.raises(UserError, match="2 users are named 'heidi'"):
        await find_user("heidi")
    assert (await find_user(f" {first.id} ")).name == "heidi"


async def test_concurrent_creations_of_one_name_make_one_user(db: None) -> None:
    from server.users import UserError, create_user, list_users

    results = await asyncio.gather(*(create_user("ivan") for _ in range(5)), return_exceptions=True)
    assert sum(not isinstance(result, BaseException) for result in results) == 1
    assert all(isinstance(result, UserError) for result in results if isinstance(result, BaseException))
    assert [user.name for user in await list_users()] == ["ivan"]
