"""Which PostgreSQL a benchmark creates its database on, and saying so.

By default the embedded PostgreSQL under ``DATA_DIR/postgres`` (``.data/postgres`` of the repository), the one
``python -m server`` uses without ``DATABASE_URL``, started here if it is not running and stopped when the last
process using it exits. ``--database-url`` or ``BENCH_DATABASE_URL`` names another server instead (any database on
it: the benchmark connects there to create its own).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.database import embedded_database_url, redact  # noqa: E402  (after the path above)


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="a PostgreSQL server to create the benchmark's database on (default: BENCH_DATABASE_URL, else the "
        "embedded PostgreSQL under DATA_DIR/postgres, as python -m server uses)",
    )


def server_url(database_url: str | None) -> str:
    """A URL of the server to create the benchmark's database on; prints which server it is."""
    if database_url:
        print(f"database: PostgreSQL at {redact(database_url)} (--database-url or BENCH_DATABASE_URL)", flush=True)
        return database_url
    pgdata = Path(os.environ.get("DATA_DIR") or ROOT / ".data") / "postgres"
    url = embedded_database_url(pgdata, database="postgres")
    print(
        f"database: embedded PostgreSQL in {pgdata.resolve()} (--database-url or BENCH_DATABASE_URL to use another)",
        flush=True,
    )
    return url


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead, keeping host, credentials and query (e.g. a socket ``host=``)."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/{database}" + (f"?{query}" if query else "")
