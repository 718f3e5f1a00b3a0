"""The command line: ``python -m server [serve|migrate|create-user|check-totals|typescript]``.

Every failure the operator can fix (a bad setting, an unreachable database) ends in one line naming what to fix and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Final

from server.database import Database, DatabaseUnavailableError, check_connection, database_url
from server.migrations import MigrationError, migrate_forwards
from server.settings import Settings, SettingsError, get_settings

logger = logging.getLogger("tollbooth")

EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_INCONSISTENT = 1


# Their debug logs print whole provider requests (message and e-mail text) and one line per HTTP call.
QUIET_LOGGERS: Final = ("openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "pgserver")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description="Tollbooth: typed RPC for AI chat features.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="apply pending migrations, then serve the API (the default)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    create_user = commands.add_parser("create-user", help="create a user and print its API key once")
    create_user.add_argument("--name", required=True, help="the user's display name")
    create_user.add_argument("--admin", action="store_true", help="allow the admin.* procedures")
    commands.add_parser(
        "check-totals",
        help="compare every conversation's totals with the sums of its usage rows (exit 1 on any difference)",
    )
    typescript = commands.add_parser(
        "typescript", help="write the TypeScript AppRouter types for @trpc/client (no database needed)"
    )
    from server.typescript import add_arguments as add_typescript_arguments

    add_typescript_arguments(typescript)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "typescript":
        from server.typescript import main as write_typescript

        return write_typescript(args.out, check=args.check)
    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"tollbooth: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    try:
        asyncio.run(_prepare_database())
        if args.command == "create-user":
            return asyncio.run(_create_user(args.name, is_admin=args.admin))
        if args.command == "check-totals":
            return asyncio.run(_check_totals())
        if args.command == "migrate":
            print("tollbooth: the database schema is up to date")
            return 0
    except DatabaseUnavailableError as error:
        print(f"tollbooth: {error}", file=sys.stderr)
        return EXIT_DATABASE
    except MigrationError as error:
        print(f"tollbooth: migrations failed: {error}", file=sys.stderr)
        return EXIT_DATABASE
    return _serve(settings)


async def _prepare_database() -> None:
    try:
        url = database_url()
    except Exception as error:  # the embedded server failed to start: say why in one line
        raise DatabaseUnavailableError(
            f"cannot start the embedded PostgreSQL (set DATABASE_URL to use another): {error}"
        ) from None
    await check_connection(url)
    await migrate_forwards()


async def _create_user(name: str, *, is_admin: bool) -> int:
    from server.users import create_user

    try:
        user = await create_user(name, is_admin=is_admin)
    except ValueError as error:
        print(f"tollbooth: {error}", file=sys.stderr)
        return EXIT_CONFIG
    role = "admin" if user.is_admin else "user"
    print(f"created {role} {user.name!r} ({user.id})")
    print(f"API key (shown once, store it now): {user.api_key}")
    return 0


async def _check_totals() -> int:
    from server.admin.consistency import check_totals

    db = Database.from_piccolo_conf()
    await db.start(min_size=1, max_size=1)
    try:
        report = await check_totals(db)
    finally:
        await db.close()
    if report.consistent:
        print(f"all {report.conversations} conversations consistent")
        return 0
    for difference in [*report.differences, *report.rollup_differences]:
        print(difference)
    conversations = len({difference.conversation_id for difference in report.differences})
    print(
        f"differences: {len(report.differences)} in {conversations} of {report.conversations} conversations, "
        f"{len(report.rollup_differences)} in the usage rollup",
        file=sys.stderr,
    )
    return EXIT_INCONSISTENT


def _serve(settings: Settings) -> int:
    import uvicorn

    from server.app import create_app
    from server.llm.pricing import PriceFileError

    if settings.offline:
        logger.warning(
            "OFFLINE MODE: no provider key is set (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY); "
            "every model call is answered by the built-in simulator and costs nothing real"
        )
    # uvicorn re-raises SIGTERM after its graceful shutdown, which would skip atexit handlers; exiting normally lets
    # them run, so the embedded PostgreSQL is stopped when this process was its last user.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        app = create_app(settings)
    except PriceFileError as error:
        print(f"tollbooth: configuration error: PRICE_FILE {settings.price_file}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # uvicorn's access log prints query strings, which carry subscription inputs and connectionParams API keys.
        access_log=False,
    )
    return 0
