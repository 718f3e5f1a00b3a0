"""What ``create_app`` mounts for the console: its routes with their error pages, static files and templates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from litestar.handlers import HTTPRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from schemas.money import format_money
from server.console.controller import BASE, ConsoleController

__all__ = ("PACKAGE_FILES", "console_handlers", "console_template_config")

PACKAGE_FILES: Final = resources.files("server.console")
"""Where ``templates/`` and ``static/`` are, installed (package data) or in a checkout."""


def console_handlers() -> list[Router | type[ConsoleController] | HTTPRouteHandler]:
    """The console's route handlers: the pages (``/console``) and its static files (``/console/static``)."""
    return [
        ConsoleController,
        create_static_files_router(
            path=f"{BASE}/static",
            directories=[Path(str(PACKAGE_FILES / "static"))],
            name="console.static",
            include_in_schema=False,
        ),
    ]


def _money(value: Decimal | None) -> str:
    """An amount exactly as stored (the wire's plain decimal string); ``unknown`` for a null cost."""
    return "unknown" if value is None else format_money(value)


def _integer(value: int) -> str:
    return f"{value:,}"


def _when(value: datetime | None, time_zone: str = "UTC") -> str:
    if value is None:
        return "—"
    return value.astimezone(ZoneInfo(time_zone)).strftime("%Y-%m-%d %H:%M")


def _with_query(query: Mapping[str, str], *pairs: object) -> str:
    """``query`` with the ``key, value`` ``pairs`` set (an empty value drops the key), as a query string; never
    ``export``, unless set here."""
    changed = {key: value for key, value in query.items() if key != "export"}
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        changed[str(key)] = str(value)
    return urlencode({key: value for key, value in changed.items() if value != ""})


def console_template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("server.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(money=_money, integer=_integer, when=_when)
    environment.globals.update(with_query=_with_query)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))
