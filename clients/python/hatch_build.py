"""Puts ``tollbooth_client`` and ``schemas`` in the distribution, which live two levels up, beside the server.

Built from the repository (``pip install ./clients/python``), they are taken from its root; the sdist holds them at
its own root, where the wheel built from it (``python -m build``) finds them as ordinary packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGES = ("tollbooth_client", "schemas")


class SharedPackagesHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        for package in PACKAGES:
            if not (root / package).is_dir():
                build_data["force_include"][str(root.parent.parent / package)] = package
