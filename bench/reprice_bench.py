"""Benchmark of ``python -m server reprice`` over a large usage table: a dry run, the apply, and the no-op re-run.

Fills a dedicated database with ``admin_bench``'s loader (``--rows`` usage rows over 90 days, totals consistent with
the rows), sets a global and a per-user budget over all time (so that every changed row moves budget spend too),
then writes a price file that lowers gpt-4o-mini's rates from the middle of the span and prices the model the data
set leaves unpriced, and times, through ``server.admin.reprice`` as the command runs it:

- the dry run (reads and prices every row, writes nothing),
- the apply (every changed row: its new cost, an adjustment, its conversation, the rollup and budget spend),
- the same apply again (nothing changes: the cost of proving it),
- ``check-totals`` afterwards (must find nothing).

    .venv/bin/python bench/reprice_bench.py                       # 1,000,000 rows
    .venv/bin/python bench/reprice_bench.py --rows 100000         # a quick run
    .venv/bin/python bench/reprice_bench.py --database-url postgresql://user@host:5432/postgres

The database is created as ``admin_bench`` creates its own (the first line of output says where) and refilled on
every run: an applied reprice leaves nothing for the next one to change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from admin_bench import MODELS, _create_database, _progress, fill
from bench_database import add_argument as add_database_argument
from bench_database import server_url, with_database


def _price_file(directory: Path, cut: datetime) -> Path:
    unpriced = next(name for name, _, _, rates in MODELS if rates is None)
    path = directory / "prices.toml"
    path.write_text(
        f"""
[[models]]
provider = "openai"
model = "gpt-4o-mini"
effective_from = {cut.date().isoformat()}
input = 0.10
cache_read = 0.05
output = 0.40

[[models]]
provider = "openai"
model = "{unpriced}"
effective_from = 2020-01-01
input = 1
output = 2
""",
        encoding="utf-8",
    )
    return path


async def bench(*, batch_size: int, cut: datetime, price_file: Path) -> None:
    from schemas.budgets import SetBudgetInput
    from server.admin.consistency import check_totals
    from server.admin.reprice import RepriceFilters, RepriceRun, print_progress, reprice
    from server.budgets.service import set_budget
    from server.database import Database
    from server.llm.pricing import PriceCatalogue

    db = Database.from_piccolo_conf()
    await db.start(min_size=1, max_size=4)
    try:
        user = await db.fetchval("SELECT owner FROM conversations LIMIT 1")
        began = time.perf_counter()
        await set_budget(db, SetBudgetInput(scope="global", period="total", limit_usd=Decimal(1_000_000), hard=False))
        await set_budget(
            db, SetBudgetInput(scope="user", subject_id=user, period="total", limit_usd=Decimal(1_000), hard=False)
        )
        _progress(f"two budgets over all time set (seeded from the rows) in {time.perf_counter() - began:.1f} s")
        catalogue = PriceCatalogue.load(price_file)
        results: list[tuple[str, RepriceRun, float]] = []
        for name, dry_run in (("dry run", True), ("apply", False), ("apply again (no-op)", False)):
            began = time.perf_counter()
            run = await reprice(
                db,
                catalogue,
                RepriceFilters(),
                dry_run=dry_run,
                reason="bench",
                batch_size=batch_size,
                price_file=str(price_file),
                progress=print_progress(),
                progress_every=20,
            )
            seconds = time.perf_counter() - began
            results.append((name, run, seconds))
            totals = run.totals
            _progress(
                f"{name}: {totals.scanned:,} rows in {seconds:.1f} s ({totals.scanned / seconds:,.0f} rows/s), "
                f"{totals.changed:,} changed ({totals.changed / seconds:,.0f} changed rows/s), "
                f"delta USD {totals.delta_usd}"
            )
        began = time.perf_counter()
        report = await check_totals(db)
        check_seconds = time.perf_counter() - began
        _progress(f"check-totals: {'consistent' if report.consistent else 'DIFFERENCES'} in {check_seconds:.1f} s")
        print()
        print(f"| run (batch {batch_size:,}) | rows | changed | seconds | rows/s |")
        print("|---|---|---|---|---|")
        for name, run, seconds in results:
            totals = run.totals
            print(
                f"| {name} | {totals.scanned:,} | {totals.changed:,} | {seconds:.1f} | "
                f"{totals.scanned / seconds:,.0f} |"
            )
        print(f"| check-totals afterwards | {run.matched:,} | — | {check_seconds:.1f} | — |")
        if not report.consistent:
            raise SystemExit("check-totals found differences after the reprice")
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage rows to generate (default 1,000,000)")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=90, help="the rows span this many days up to now")
    parser.add_argument("--batch-size", type=int, default=5_000, help="rows per reprice batch (default 5000)")
    parser.add_argument("--database", default="tollbooth_reprice_bench", help="the database to create (dropped first)")
    add_database_argument(parser)
    args = parser.parse_args()

    admin_url = server_url(args.database_url)
    url = with_database(admin_url, args.database)
    os.environ["DATABASE_URL"] = url  # read by piccolo_conf when the server modules are first imported

    async def run() -> None:
        await _create_database(admin_url, args.database, reuse=False)
        from server.migrations import migrate_forwards

        await migrate_forwards()
        end = datetime.now(UTC).replace(microsecond=0)
        _progress(f"filling database {args.database}: {args.rows:,} usage rows")
        began = time.perf_counter()
        await fill(url, rows=args.rows, conversations=args.conversations, users=args.users, days=args.days, end=end)
        _progress(f"filled in {time.perf_counter() - began:.1f} s")
        cut = end - timedelta(days=args.days // 2)
        with tempfile.TemporaryDirectory() as directory:
            await bench(batch_size=args.batch_size, cut=cut, price_file=_price_file(Path(directory), cut))

    asyncio.run(run())


if __name__ == "__main__":
    main()
