"""Applying the checked-in Piccolo migrations from code (start-up, the CLI and the tests)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Final

from piccolo.apps.migrations.commands.backwards import run_backwards
from piccolo.apps.migrations.commands.forwards import run_forwards
from piccolo.apps.migrations.tables import Migration

APP_NAME: Final = "server"


class MigrationError(RuntimeError):
    """A migration did not apply; the message is Piccolo's."""


@dataclass(frozen=True, slots=True)
class MigrationsApplied:
    """What ``migrate_forwards`` did: the ids it applied, oldest first (none: the schema was up to date), and how many
    migrations the database has now."""

    applied: tuple[str, ...]
    total: int


async def migrate_forwards() -> MigrationsApplied:
    """Apply every pending migration of the ``server`` app (a no-op when none is pending)."""
    before = await _applied()
    with contextlib.redirect_stdout(io.StringIO()) as output:
        result = await run_forwards(app_name=APP_NAME, migration_id="all")
    if not result.success:
        raise MigrationError(result.message or output.getvalue())
    after = await _applied()
    return MigrationsApplied(applied=tuple(name for name in after if name not in before), total=len(after))


async def migrate_backwards_all() -> None:
    """Undo every migration of the ``server`` app: used to prove the migrations reverse cleanly."""
    with contextlib.redirect_stdout(io.StringIO()) as output:
        result = await run_backwards(app_name=APP_NAME, migration_id="all", auto_agree=True)
    if not result.success:
        raise MigrationError(result.message or output.getvalue())


async def _applied() -> list[str]:
    """The ids of the migrations the database has, oldest first."""
    if not await Migration.table_exists():
        return []
    return await Migration.get_migrations_which_ran(app_name=APP_NAME)
