"""Persona sets in the response cache, and de-duplicated requests counted per day.

Hand-written SQL like the response cache's migration.

- ``response_cache.calls``: the other model calls a cached answer needed besides the one in ``usage`` (a persona
  set's pictures), as JSON: each call's provider, models, usage and id, so that a hit can price what the whole answer
  saved at the rates of the day. ``[]`` for a single call.
- ``idempotent_replay_counts.deduplicated``: requests that carried no idempotency key and were answered from an
  identical earlier one within the de-duplication window (``personas.generate``), per UTC day and procedure.
  ``replays`` keeps counting only replays of keys the callers sent; ``idempotent_replays_daily`` shows the days that
  had any.
- View ``deduplicated_requests_daily``.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T16:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Persona sets in the response cache; de-duplicated requests"

FORWARDS = (
    "ALTER TABLE response_cache ADD COLUMN calls jsonb NOT NULL DEFAULT '[]'",
    "ALTER TABLE idempotent_replay_counts ADD COLUMN deduplicated bigint NOT NULL DEFAULT 0",
    """
    CREATE OR REPLACE VIEW idempotent_replays_daily AS
    SELECT day, procedure, replays FROM idempotent_replay_counts WHERE replays > 0
    """,
    """
    CREATE VIEW deduplicated_requests_daily AS
    SELECT day, procedure, deduplicated FROM idempotent_replay_counts WHERE deduplicated > 0
    """,
)

BACKWARDS = (
    "DROP VIEW IF EXISTS deduplicated_requests_daily",
    """
    CREATE OR REPLACE VIEW idempotent_replays_daily AS
    SELECT day, procedure, replays FROM idempotent_replay_counts
    """,
    "ALTER TABLE idempotent_replay_counts DROP COLUMN IF EXISTS deduplicated",
    "ALTER TABLE response_cache DROP COLUMN IF EXISTS calls",
)


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
