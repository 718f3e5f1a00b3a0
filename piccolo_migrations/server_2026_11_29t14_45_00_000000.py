"""Idempotency keys (``server.idempotency``): one row per user, procedure and key.

Hand-written SQL like the budgets' migration: no Piccolo table maps it (only ``server.idempotency`` reads it).
``http_status`` is NULL while the call runs, under ``lease_expires_at``; then ``response`` holds what it answered,
kept until ``expires_at``. ``varchar(255)`` counts characters, as the wire's 1–255 characters do.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T14:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Idempotency keys"

FORWARDS = (
    """
    CREATE TABLE idempotency_keys (
        user_id uuid NOT NULL,
        procedure varchar(100) NOT NULL,
        idempotency_key varchar(255) NOT NULL,
        request_hash bytea NOT NULL,
        claim_id uuid NOT NULL,
        http_status smallint,
        response bytea,
        created_at timestamptz NOT NULL,
        lease_expires_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (user_id, procedure, idempotency_key)
    )
    """,
    "CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at)",
)

BACKWARDS = ("DROP TABLE IF EXISTS idempotency_keys",)


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
