"""The documentation's code runs as written, against the service as ``python -m server`` runs it without a provider
key (the built-in simulator answers, deterministically):

- every Python example (the READMEs' ``python`` blocks, ``tollbooth_client``'s docstring) is a whole program, run
  with the environment the README's shell lines set (``TOLLBOOTH_API_KEY``; ``TOLLBOOTH_URL``);
- the README's ``curl`` call answers exactly the sample reply printed under it, ids aside;
- the TypeScript example of clients/ts/README.md compiles with ``tsc --strict`` in a CommonJS project as ``tsc --init``
  made it until TypeScript 5.9 (no top-level ``await`` there), and in the ESM project of clients/ts.

tests/test_client_package.py type-checks the Python examples with only the client installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest

from server.settings import Settings
from server.users import NewUser
from tests.conftest import ServedApp, serve_app
from tests.docs_snippets import ROOT, Snippet, fenced, python_snippets
from tests.test_typescript_interop import CLIENT_DIR, installed_node_modules

README: Final = ROOT / "README.md"
DOCUMENTED_ADDRESS: Final = "localhost:8000"
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
async def offline_app(db: None, tmp_path: Path) -> AsyncIterator[ServedApp]:
    """The service as ``python -m server`` runs with no provider key set: offline, the simulator answers."""
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    assert settings.offline
    async with serve_app(settings) as served:
        yield served


def _environment(app: ServedApp, user: NewUser) -> dict[str, str]:
    return {**os.environ, "TOLLBOOTH_URL": app.url, "TOLLBOOTH_API_KEY": user.api_key}


async def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """The command's exit status and output, run beside the app (which serves from this event loop)."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize("snippet", python_snippets(), ids=lambda snippet: snippet.where)
async def test_python_examples_run_as_written(
    snippet: Snippet, offline_app: ServedApp, alice: NewUser, tmp_path: Path
) -> None:
    program = tmp_path / "example.py"
    program.write_text(snippet.code, encoding="utf-8")
    status, output = await _run([sys.executable, str(program)], tmp_path, _environment(offline_app, alice))
    assert status == 0, f"{snippet.where}:\n{output}"


def _without_ids(value: Any) -> Any:
    return json.loads(_UUID.sub("<uuid>", json.dumps(value)))


async def test_the_readme_curl_call_answers_the_sample_reply_shown(
    offline_app: ServedApp, alice: NewUser, tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    assert curl, "the README's example needs curl"
    blocks = fenced(README)
    [(number, call)] = [
        (number, line.strip())
        for number, block in enumerate(blocks)
        if block.language == "sh"
        for line in block.code.replace("\\\n", " ").splitlines()
        if line.strip().startswith("curl ")
    ]
    sample = blocks[number + 1]  # the reply, printed right under the call
    assert sample.language == "json", f"{sample.where}: expected the sample reply to the curl call above it"
    address = offline_app.url.removeprefix("http://")
    status, output = await _run(
        ["bash", "-c", call.replace(DOCUMENTED_ADDRESS, address)], tmp_path, _environment(offline_app, alice)
    )
    assert status == 0, output
    assert _without_ids(json.loads(output)) == _without_ids(json.loads(sample.code)), (
        f"{sample.where}: the sample reply is not what the service answers; it answers\n{output}"
    )


TS_PROJECTS: Final = {
    # What `tsc --init` wrote until TypeScript 5.9: CommonJS, where a top-level `await` does not compile.
    "commonjs": ("--target", "es2016", "--module", "commonjs", "--esModuleInterop", "--skipLibCheck"),
    # The settings of clients/ts (tsconfig.json): ESM on Node.
    "esm": ("--target", "es2022", "--lib", "es2022,dom", "--module", "nodenext", "--types", "node"),
}


@pytest.mark.parametrize("project", TS_PROJECTS)
@pytest.mark.parametrize("snippet", fenced(CLIENT_DIR / "README.md", "ts"), ids=lambda snippet: snippet.where)
def test_typescript_examples_compile_as_written(snippet: Snippet, project: str) -> None:
    with installed_node_modules() as node:
        (CLIENT_DIR / "build").mkdir(exist_ok=True)
        # Inside clients/ts, so that the example finds node_modules; beside the generated types it imports.
        where = Path(tempfile.mkdtemp(prefix="readme-", dir=CLIENT_DIR / "build"))
        try:
            shutil.copy(CLIENT_DIR / "src" / "app-router.d.ts", where)
            (where / "example.ts").write_text(snippet.code, encoding="utf-8")
            tsc = str(CLIENT_DIR / "node_modules" / "typescript" / "bin" / "tsc")
            command = [node, tsc, "--strict", "--noEmit", *TS_PROJECTS[project], "example.ts"]
            result = subprocess.run(command, cwd=where, capture_output=True, text=True, timeout=300)
        finally:
            shutil.rmtree(where)
    assert result.returncode == 0, f"{snippet.where} ({project}):\n{result.stdout}{result.stderr}"
