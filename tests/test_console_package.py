"""The console's templates and static files ship inside the package: found through ``importlib.resources`` and
present in the wheel built from this checkout, so a fresh ``pip install`` serves ``/console`` with no build step."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

from tests.conftest import ROOT

FILES = (
    "templates/base.html",
    "templates/macros.html",
    "templates/sign_in.html",
    "templates/error.html",
    "templates/overview.html",
    "templates/conversations.html",
    "templates/conversation.html",
    "templates/table_page.html",
    "templates/budgets.html",
    "static/console.css",
    "static/console.js",
)


def test_the_console_files_are_package_resources() -> None:
    package = resources.files("server.console")
    for name in FILES:
        assert (package / name).is_file(), name
    shipped = {f"templates/{p.name}" for p in (package / "templates").iterdir()}
    shipped |= {f"static/{p.name}" for p in (package / "static").iterdir()}
    assert shipped == set(FILES)


def test_the_build_holds_the_console_files(tmp_path: Path) -> None:
    """setuptools' ``build_py``, the step that fills a wheel, copies them beside the modules (the package-data of
    pyproject.toml); ``pip wheel`` would need the ``wheel`` package, which the environment may not have."""
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    for name in FILES:
        assert (tmp_path / "server" / "console" / name).is_file(), name
