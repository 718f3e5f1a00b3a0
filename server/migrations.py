"""Applying the checked-in Piccolo migrations from code (start-up, the CLI and the tests)."""

from __future__ import annotations

import contextlib
import io

from piccolo.apps.migrations.commands.backwards import run_backwards
from piccolo.apps.migrations.commands.forwards import run_forwards


class MigrationError(RuntimeError):
    """A migration did not apply; the message is Piccolo's."""


async def migrate_forwards() -> None:
    """Apply every pending migration of the ``server`` app (a no-op when none is pending)."""
    with contextlib.redirect_stdout(io.StringIO()) as output:
        result = await run_forwards(app_name="server", migration_id="all")
    if not result.success:
        raise MigrationError(result.message or output.getvalue())


async def migrate_backwards_all() -> None:
    """Undo every migration of the ``server`` app: used to prove the migrations reverse cleanly."""
    with contextlib.redirect_stdout(io.StringIO()) as output:
        result = await run_backwards(app_name="server", migration_id="all", auto_agree=True)
    if not result.success:
        raise MigrationError(result.message or output.getvalue())
