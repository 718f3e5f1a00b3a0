"""Admin console sessions (``server.console.sessions``).

Hand-written SQL like the cache statistics' migration. A row is a signed-in console session: ``id`` is the SHA-256
of the session id the cookie carries (the cookie alone cannot be replayed from a database dump), ``api_key_hash`` the
admin key it was opened with, so that revoking or rotating that key ends the session. Signing out deletes the row;
expired rows are deleted at the next sign-in.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T16:47:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Admin console sessions"

FORWARDS = (
    """
    CREATE TABLE console_sessions (
        id text PRIMARY KEY,
        user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        api_key_hash text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at)",
)

BACKWARDS = ("DROP TABLE IF EXISTS console_sessions",)


async def _run_all(statements: tuple[str, ...]) -> None:
    """Run in the migration's own transaction (``run_ddl`` joins it), so a failure leaves nothing half done."""
    engine = engine_finder()
    assert engine is not None
    for statement in statements:
        await engine.run_ddl(statement)


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="server", description=DESCRIPTION)

    async def run_forwards() -> None:
        await _run_all(FORWARDS)

    async def run_backwards() -> None:
        await _run_all(BACKWARDS)

    manager.add_raw(run_forwards)
    manager.add_raw_backwards(run_backwards)
    return manager
