"""The Python client as someone outside this repository gets it: ``pip install ./clients/python``, not editable, into a
fresh virtual environment; no server, none of the server's dependencies, and types that mypy sees.

pip needs the package index (hatchling to build, msgspec and httpx to install); its cache serves later runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Final, get_args

import msgspec
import pytest

import tollbooth_client
from schemas.router import APP_REGISTRY
from tests.docs_snippets import ROOT, python_snippets

CLIENT_PROJECT: Final = ROOT / "clients" / "python"
# The server and what only it needs: none may be importable beside the client.
SERVER_ONLY: Final = ("server", "litestar", "piccolo", "asyncpg", "openai", "anthropic", "aioboto3", "uvicorn")


def _wire_types(tp: object, seen: set[type[msgspec.Struct]]) -> set[type[msgspec.Struct]]:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if tp not in seen:
            seen.add(tp)
            for field in msgspec.structs.fields(tp):
                _wire_types(field.type, seen)
    else:
        for arg in get_args(tp):
            _wire_types(arg, seen)
    return seen


def test_one_import_offers_every_wire_type() -> None:
    """``from tollbooth_client import ...`` reaches every input, output and event of every procedure, and the Structs
    they hold: a user never imports from ``schemas``."""
    wire: set[type[msgspec.Struct]] = set()
    for procedure in APP_REGISTRY:
        _wire_types(procedure.input, wire)
        _wire_types(procedure.output, wire)
    exported = {getattr(tollbooth_client, name) for name in tollbooth_client.__all__}
    assert sorted(struct.__name__ for struct in wire - exported) == []
    assert {"Money", "ErrorCode", "TRPCClientError", "TollboothClient"} <= set(tollbooth_client.__all__)


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # Nothing of this checkout may leak in: no PYTHONPATH, no MYPYPATH, and a working directory outside it.
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "MYPYPATH")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a new virtual environment holding only the client, installed from clients/python."""
    where = tmp_path_factory.mktemp("client-only")
    venv = where / "venv"
    created = _run([sys.executable, "-m", "venv", str(venv)], cwd=where, timeout=120)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(CLIENT_PROJECT)]
    installed = _run(pip, cwd=where, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def test_the_client_installs_alone_with_only_msgspec_and_httpx(client_python: Path, tmp_path: Path) -> None:
    probe = textwrap.dedent(
        f"""
        import importlib, importlib.metadata, importlib.util, json, pkgutil
        import schemas, tollbooth_client

        modules = [
            module.name
            for package in (schemas, tollbooth_client)
            for module in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        ]
        for name in modules:
            importlib.import_module(name)
        print(json.dumps({{
            "modules": modules,
            "files": [schemas.__file__, tollbooth_client.__file__],
            "requires": importlib.metadata.requires("tollbooth-client"),
            "importable": [name for name in {SERVER_ONLY!r} if importlib.util.find_spec(name) is not None],
        }}))
        """
    )
    result = _run([str(client_python), "-c", probe], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["importable"] == []
    assert sorted(requirement.split(">")[0] for requirement in report["requires"]) == ["httpx", "msgspec"]
    # Every module of both packages imported: schemas needs nothing of the server.
    assert {"schemas.chat", "schemas.router", "tollbooth_client.client"} <= set(report["modules"])
    assert all(not Path(file).is_relative_to(ROOT) for file in report["files"])  # the installed copy, not the checkout


def test_mypy_sees_the_installed_client_and_infers_its_outputs(client_python: Path, tmp_path: Path) -> None:
    """Run with the installed package's ``py.typed``; without it every name from the client would be ``Any``."""
    program = tmp_path / "app.py"
    program.write_text(
        textwrap.dedent(
            """\
            from uuid import uuid4

            from tollbooth_client import ClockInput, SendMessageInput, StreamMessageInput, TollboothClient


            async def main() -> None:
                async with TollboothClient("http://127.0.0.1:8000", api_key="tb_key") as client:
                    sent = await client.chat.send_message(SendMessageInput(message="Hello"))
                    reveal_type(sent)
                    reveal_type(sent.cost_usd)
                    reveal_type(client.chat.stream_message(StreamMessageInput(request_id=uuid4(), message="Hi")))
                    reveal_type(await client.system.whoami())
                    await client.chat.send_message(ClockInput())
            """
        )
    )
    # The documentation's examples type-check with nothing but the client installed, too.
    snippets = []
    for number, snippet in enumerate(python_snippets()):
        path = tmp_path / f"snippet_{number}.py"
        path.write_text(snippet.code, encoding="utf-8")
        snippets.append(path)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--config-file", "", "--python-executable", str(client_python)]
    cache = ["--cache-dir", str(tmp_path / ".mypy_cache")]
    result = _run([*mypy, *cache, str(program), *map(str, snippets)], cwd=tmp_path, timeout=300)

    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[1] for line in lines if line.startswith("app.py:") and "Revealed" in line] == [
        'note: Revealed type is "schemas.chat.SendMessageOutput"',
        'note: Revealed type is "schemas.money.Money | None"',
        'note: Revealed type is "tollbooth_client.subscription.Subscription[schemas.chat.StreamMessageDelta | '
        'schemas.chat.StreamMessageDone]"',
        'note: Revealed type is "schemas.system.WhoAmIOutput"',
    ], result.stdout + result.stderr
    errors = [line for line in lines if ": error:" in line]
    assert errors == [
        'app.py:13: error: Argument 1 has incompatible type "ClockInput"; expected "SendMessageInput"  [arg-type]'
    ], result.stdout + result.stderr
