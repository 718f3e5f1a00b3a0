"""The command line: ``python -m server [COMMAND]``, serving the API when no command is given.

Commands: ``serve`` (``--host``/``--port`` override ``HOST``/``PORT``), ``migrate``, the users' (``create-user``,
``list-users``, ``revoke-key``, ``rotate-key``), ``check-totals``, ``reprice`` and ``typescript``. Every failure the
operator can fix (a bad setting, an unreachable database, a user that does not exist) ends in one line naming what
to fix and a non-zero exit, never a traceback. A key is printed once, on a line of its own; ``--quiet`` prints only
the key and ``--json`` one JSON object, for scripts (``KEY=$(python -m server create-user --name alice --quiet)``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import msgspec

from server.database import Database, check_connection, database_url, engine_config
from server.errors import DatabaseUnavailableError
from server.llm.sdk_warnings import route_sdk_warnings
from server.migrations import MigrationError, MigrationsApplied, migrate_forwards
from server.settings import ProviderSettings, Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from server.admin import reprice as reprice_module
    from server.users import NewUser, UserRecord

logger = logging.getLogger("tollbooth")

EXIT_CONFIG = 2
EXIT_USAGE = 2  # a command that cannot be done as asked (argparse's own errors exit with 2 too)
EXIT_DATABASE = 3
EXIT_INCONSISTENT = 1

# Their debug logs print whole provider requests (message and e-mail text) and one line per HTTP call.
QUIET_LOGGERS: Final = ("openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "pgserver")

# Where each SDK sends requests when its base URL is not set.
SDK_BASE_URLS: Final = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


def configure_logging(level: str) -> None:
    """The process's logging, once: ``level`` for ours, WARNING for the chatty libraries', the SDKs' warnings too."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    route_sdk_warnings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description="Tollbooth: typed RPC for AI chat features.")
    _add_listen_arguments(parser, default=None)  # `python -m server --port 18555` serves, as `serve --port` does
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="apply pending migrations, then serve the API (the default)")
    _add_listen_arguments(serve, default=argparse.SUPPRESS)
    commands.add_parser("migrate", help="apply pending database migrations and exit")

    create_user = commands.add_parser("create-user", help="create a user and print its API key once")
    create_user.add_argument("--name", required=True, help="the user's name, unique unless --allow-duplicate")
    create_user.add_argument("--admin", action="store_true", help="allow the admin.* procedures")
    create_user.add_argument(
        "--allow-duplicate", action="store_true", help="create the user even if another has the same name"
    )
    _add_key_output_arguments(create_user)

    list_users = commands.add_parser("list-users", help="list the users with their key fingerprints (never the keys)")
    list_users.add_argument("--json", action="store_true", help="print a JSON array")

    revoke_key = commands.add_parser("revoke-key", help="revoke a user's API key (rotate-key gives a new one)")
    revoke_key.add_argument("user", metavar="USER", help="the user's id, or its name when no other user has it")

    rotate_key = commands.add_parser("rotate-key", help="give a user a new API key, printed once; the old one stops")
    rotate_key.add_argument("user", metavar="USER", help="the user's id, or its name when no other user has it")
    _add_key_output_arguments(rotate_key)

    commands.add_parser(
        "check-totals",
        help="compare every conversation's totals with the sums of its usage rows (exit 1 on any difference)",
    )
    _add_reprice_parser(commands)
    typescript = commands.add_parser(
        "typescript", help="write the TypeScript AppRouter types for @trpc/client (no database needed)"
    )
    from server.typescript import add_arguments as add_typescript_arguments

    add_typescript_arguments(typescript)
    return parser


def _add_reprice_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reprice = commands.add_parser(
        "reprice",
        help="recompute recorded costs at the prices now known for their call time (--dry-run first, then --apply)",
        description=(
            "Recompute the cost of the matching usage rows at the prices in force at each call's time, as known now "
            "(genai-prices and PRICE_FILE). Say --dry-run (count rows, rows that change and the exact total delta, "
            "per model; nothing is changed) or --apply (write the new costs, one adjustment per changed row, and the "
            "deltas to conversation totals, the usage rollup and budget spend, batch by batch in one transaction "
            "each). Rows whose cost would not change are skipped, so re-running changes nothing. A date alone means "
            "its midnight UTC; --since is inclusive, --until exclusive."
        ),
    )
    mode = reprice.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="only count: change nothing (one of the two is required)")
    mode.add_argument("--apply", action="store_true", help="write the new costs and their adjustments")
    mode.add_argument("--resume", type=uuid.UUID, metavar="RUN_ID", help="continue a run that stopped, from its cursor")
    reprice.add_argument("--since", type=_utc_time, help="calls made at or after this date or time (UTC)")
    reprice.add_argument("--until", type=_utc_time, help="calls made before this date or time (UTC)")
    reprice.add_argument(
        "--model", action="append", default=[], help="only calls of this model, as reported (repeatable)"
    )
    reprice.add_argument("--reason", default="", help="why the prices changed (kept with the run and each adjustment)")
    reprice.add_argument("--batch-size", type=_positive, default=5_000, help="rows per batch (default 5000)")
    reprice.add_argument(
        "--progress-every", type=_positive, default=10, help="a progress line on stderr every N batches (default 10)"
    )
    reprice.add_argument("--json", action="store_true", help="print the run's figures as one JSON object")


def _utc_time(value: str) -> datetime:
    """A date alone (its midnight UTC) or an ISO 8601 time; a time without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date or an ISO 8601 time, got {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _add_listen_arguments(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("--host", default=default, help="the address to listen on (overrides HOST)")
    parser.add_argument("--port", type=_port, default=default, help="the port to listen on (overrides PORT)")


def _add_key_output_arguments(parser: argparse.ArgumentParser) -> None:
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="print only the API key")
    output.add_argument("--json", action="store_true", help="print the user and its API key as one JSON object")


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {port}")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    if command != "serve" and (args.host is not None or args.port is not None):
        parser.error(f"--host and --port apply to serve, not to {command}")
    if command == "typescript":
        from server.typescript import main as write_typescript

        return write_typescript(args.out, check=args.check)
    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"tollbooth: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    # A script that reads a key from stdout wants nothing else; warnings and errors still reach stderr.
    scripted = getattr(args, "quiet", False) or getattr(args, "json", False)
    configure_logging("WARNING" if scripted else settings.log_level)
    try:
        migrations = asyncio.run(_prepare_database())
        if command == "migrate":
            applied = f"applied {len(migrations.applied)} migration(s); " if migrations.applied else ""
            print(f"tollbooth: {applied}the database schema is up to date ({migrations.total} migrations)")
            return 0
        if command == "check-totals":
            return asyncio.run(_check_totals())
        if command == "reprice":
            return asyncio.run(_reprice(args, settings))
        if command != "serve":
            return asyncio.run(_user_command(command, args))
    except DatabaseUnavailableError as error:
        print(f"tollbooth: {error}", file=sys.stderr)
        return EXIT_DATABASE
    except MigrationError as error:
        print(f"tollbooth: migrations failed: {error}", file=sys.stderr)
        return EXIT_DATABASE
    listen = {"host": args.host, "port": args.port}
    return _serve(dataclasses.replace(settings, **{key: value for key, value in listen.items() if value is not None}))


async def _prepare_database() -> MigrationsApplied:
    try:
        url = database_url()
    except Exception as error:  # the embedded server failed to start: say why in one line
        raise DatabaseUnavailableError(
            f"cannot start the embedded PostgreSQL (set DATABASE_URL to use another): {error}"
        ) from None
    await check_connection(url)
    migrations = await migrate_forwards()
    if migrations.applied:
        logger.info(
            "migrations: applied %d (%s), %d in all",
            len(migrations.applied),
            ", ".join(migrations.applied),
            migrations.total,
        )
    else:
        logger.info("migrations: up to date (%d applied)", migrations.total)
    return migrations


async def _user_command(command: str, args: argparse.Namespace) -> int:
    from server.auth import CACHE_SECONDS
    from server.users import UserError, create_user, list_users, revoke_key, rotate_key

    cache = f"a running server stops accepting it within {CACHE_SECONDS:.0f} s (it caches a key's user that long)"
    try:
        if command == "create-user":
            user = await create_user(args.name, is_admin=args.admin, allow_duplicate=args.allow_duplicate)
            role = "admin" if user.is_admin else "user"
            _print_key(user, args, f"created {role} {user.name!r} ({user.id}), key fingerprint {user.key_fingerprint}")
        elif command == "list-users":
            _print_users(await list_users(), as_json=args.json)
        elif command == "revoke-key":
            record, revoked = await revoke_key(args.user)
            if revoked:
                print(f"revoked the API key of {record.name!r} ({record.id}); {cache}")
            else:
                print(f"the API key of {record.name!r} ({record.id}) was already revoked")
        elif command == "rotate-key":
            user = await rotate_key(args.user)
            summary = f"new API key for {user.name!r} ({user.id}), key fingerprint {user.key_fingerprint}"
            _print_key(user, args, f"{summary}; for the old key, {cache}")
    except UserError as error:
        print(f"tollbooth: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


class _KeyJson(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    user_id: uuid.UUID
    name: str
    is_admin: bool
    api_key: str
    key_fingerprint: str


class _UserJson(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    user_id: uuid.UUID
    name: str
    is_admin: bool
    created_at: datetime
    key_fingerprint: str | None  # None: revoked


def _print_key(user: NewUser, args: argparse.Namespace, summary: str) -> None:
    if args.quiet:
        print(user.api_key)
    elif args.json:
        key = _KeyJson(
            user_id=user.id,
            name=user.name,
            is_admin=user.is_admin,
            api_key=user.api_key,
            key_fingerprint=user.key_fingerprint,
        )
        print(msgspec.json.encode(key).decode())
    else:
        print(summary)
        print(f"API key (shown once, store it now): {user.api_key}")


def _print_users(users: list[UserRecord], *, as_json: bool) -> None:
    if as_json:
        listed = [
            _UserJson(
                user_id=user.id,
                name=user.name,
                is_admin=user.is_admin,
                created_at=user.created_at,
                key_fingerprint=user.key_fingerprint,
            )
            for user in users
        ]
        print(msgspec.json.encode(listed).decode())
        return
    if not users:
        print("no users yet: python -m server create-user --name NAME")
        return
    rows = [("id", "name", "role", "created (UTC)", "key fingerprint")]
    rows += [
        (
            str(user.id),
            user.name,
            "admin" if user.is_admin else "user",
            user.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            user.key_fingerprint or "revoked",
        )
        for user in users
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


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
    for difference in [*report.differences, *report.rollup_differences, *report.budget_differences]:
        print(difference)
    conversations = len({difference.conversation_id for difference in report.differences})
    print(
        f"differences: {len(report.differences)} in {conversations} of {report.conversations} conversations, "
        f"{len(report.rollup_differences)} in the usage rollup, {len(report.budget_differences)} in budget spend",
        file=sys.stderr,
    )
    return EXIT_INCONSISTENT


async def _reprice(args: argparse.Namespace, settings: Settings) -> int:
    from piccolo.engine.postgres import PostgresEngine

    from server.admin import reprice
    from server.llm.pricing import PriceCatalogue

    if args.resume is not None and (args.since or args.until or args.model or args.reason):
        print("tollbooth: --resume continues a run with its own filters and reason; give none", file=sys.stderr)
        return EXIT_USAGE
    if args.since is not None and args.until is not None and args.since >= args.until:
        print("tollbooth: --since must be before --until", file=sys.stderr)
        return EXIT_USAGE
    catalogue = PriceCatalogue.load(settings.price_file)
    db = Database(PostgresEngine(config=engine_config()))  # its own pool: also when called inside another process
    await db.start(min_size=1, max_size=2)
    progress = reprice.print_progress()
    try:
        if args.resume is not None:
            run = await reprice.resume(
                db, catalogue, args.resume, progress=progress, progress_every=args.progress_every
            )
        else:
            run = await reprice.reprice(
                db,
                catalogue,
                reprice.RepriceFilters(since=args.since, until=args.until, models=tuple(dict.fromkeys(args.model))),
                dry_run=args.dry_run,
                reason=args.reason,
                batch_size=args.batch_size,
                price_file=None if settings.price_file is None else str(settings.price_file),
                progress=progress,
                progress_every=args.progress_every,
            )
    except reprice.RepriceError as error:
        print(f"tollbooth: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await db.close()
    _print_reprice(run, as_json=args.json)
    return 0


def _print_reprice(run: reprice_module.RepriceRun, *, as_json: bool) -> None:
    from schemas.money import format_money

    totals = run.totals
    if as_json:
        document = {
            "runId": str(run.run_id),
            "dryRun": run.dry_run,
            "status": run.status,
            "matchedCalls": run.matched,
            **{f"{key}Calls": getattr(totals, name) for key, name in _FIGURES},
            "deltaUsd": format_money(totals.delta_usd),
            "models": {
                model: {
                    **{f"{key}Calls": getattr(f, name) for key, name in _FIGURES},
                    "deltaUsd": format_money(f.delta_usd),
                }
                for model, f in sorted(run.by_model.items())
            },
        }
        print(msgspec.json.encode(document).decode())
        return
    mode = "dry run, nothing changed" if run.dry_run else "applied"
    print(
        f"reprice {run.run_id} ({mode}): {totals.scanned:,} rows scanned of {run.matched:,} matched, "
        f"{totals.changed:,} {'would change' if run.dry_run else 'changed'} ({totals.newly_priced:,} newly priced, "
        f"{totals.skipped:,} skipped: service tier), total delta USD {format_money(totals.delta_usd)}"
    )
    rows = [("model", "rows", "changed", "newly priced", "skipped", "delta USD")]
    rows += [
        (model, f"{f.scanned:,}", f"{f.changed:,}", f"{f.newly_priced:,}", f"{f.skipped:,}", format_money(f.delta_usd))
        for model, f in sorted(run.by_model.items())
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


_FIGURES: Final = (
    ("scanned", "scanned"),
    ("changed", "changed"),
    ("newlyPriced", "newly_priced"),
    ("skipped", "skipped"),
)


def describe_providers(settings: Settings) -> str:
    """Which provider answers model calls, for the start-up log: a real one by the host of its base URL."""
    if settings.offline:
        return "openai, anthropic and gemini: the built-in simulator"
    providers: tuple[tuple[str, ProviderSettings], ...] = (
        ("openai", settings.openai),
        ("anthropic", settings.anthropic),
        ("gemini", settings.gemini),
    )
    described = []
    for name, provider in providers:
        if provider.api_key is None:
            described.append(f"{name}: not configured ({name.upper()}_API_KEY is not set)")
        else:
            base_url = provider.base_url or SDK_BASE_URLS[name]
            described.append(f"{name}: {urlsplit(base_url).netloc.rpartition('@')[2]}")
    return ", ".join(described)


def _serve(settings: Settings) -> int:
    import uvicorn

    from server.app import create_app
    from server.llm.pricing import PriceFileError

    if settings.offline:
        logger.warning(
            "providers: %s (OFFLINE MODE: no provider key is set: OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY; "
            "every model call is answered by the simulator and costs nothing real)",
            describe_providers(settings),
        )
    else:
        logger.info("providers: %s", describe_providers(settings))
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
