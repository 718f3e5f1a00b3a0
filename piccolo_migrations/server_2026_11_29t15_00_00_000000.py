"""Response cache (``server.llm.response_cache``): one row per cache key, and the cache-hit columns of usage rows.

Hand-written SQL like the idempotency keys' migration: no Piccolo table maps ``response_cache``. The key is a
SHA-256 over the whole request and the caller's scope, so it alone is the primary key; ``user_id`` is kept beside it
for pruning and statistics, never for lookups. ``usage`` is the original call's token buckets (JSON), so a hit can
price what it saved at the rates of the day. A usage row of a hit has status ``cache_hit``, costs 0, and says what it
saved (``saved_usd``) and which call answered first (``cached_call_id``). ``stream_requests.response`` keeps a
finished ``chat.streamMessage``'s ``done`` event, so a repeat of its ``requestId`` with the same input
(``request_hash``, a SHA-256 of it) replays it.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Response cache"

FORWARDS = (
    """
    CREATE TABLE response_cache (
        cache_key bytea PRIMARY KEY,
        user_id uuid NOT NULL,
        procedure varchar(100) NOT NULL,
        provider varchar(32) NOT NULL,
        requested_model varchar(200) NOT NULL,
        model varchar(200) NOT NULL,
        service_tier varchar(32),
        reply text NOT NULL,
        usage jsonb NOT NULL,
        call_id uuid NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX response_cache_expires_at ON response_cache (expires_at)",
    "ALTER TABLE ai_usage_logs ADD COLUMN saved_usd numeric(38, 18), ADD COLUMN cached_call_id uuid",
    "ALTER TABLE stream_requests ADD COLUMN request_hash bytea, ADD COLUMN response bytea",
)

BACKWARDS = (
    "ALTER TABLE stream_requests DROP COLUMN IF EXISTS request_hash, DROP COLUMN IF EXISTS response",
    "ALTER TABLE ai_usage_logs DROP COLUMN IF EXISTS saved_usd, DROP COLUMN IF EXISTS cached_call_id",
    "DROP TABLE IF EXISTS response_cache",
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
