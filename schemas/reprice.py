"""Wire types of ``admin.repriceRuns``: the runs of ``python -m server reprice`` with their figures.

A run recomputes recorded costs at the prices now known for each call's time (README, "Repricing"). Its figures
count usage rows (one per call): ``matchedCalls`` matched its window and models when it started, ``scannedCalls``
were priced again so far, ``changedCalls`` changed cost (or would have, in a dry run), ``newlyPricedCalls`` of them
had no price before, ``skippedCalls`` were left alone because they were priced at a service tier the row does not
record. ``deltaUsd`` is the exact sum of new minus old costs (an unpriced cost counts as 0).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from schemas.base import WireInput, WireOutput
from schemas.money import Money
from schemas.registry import Access, query
from schemas.validation import Cursor, decode_cursor

__all__ = (
    "ADMIN_REPRICE_PROCEDURES",
    "REPRICE_RUNS",
    "RepriceModelFigures",
    "RepriceRun",
    "RepriceRuns",
    "RepriceRunsInput",
    "RepriceStatus",
)

RepriceStatus = Literal["running", "completed", "failed"]
"""``running``: under way, or stopped without saying so (a killed process: ``--resume`` continues it); ``failed``:
stopped by an error, its whole batches applied (``--resume`` continues it)."""


class RepriceRunsInput(WireInput, frozen=True, kw_only=True):
    """``limit`` and ``cursor`` page the runs, newest first."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        if self.cursor is not None:
            decode_cursor(self.cursor)


class RepriceFigures(WireOutput, frozen=True, kw_only=True):
    scanned_calls: int
    changed_calls: int
    newly_priced_calls: int
    skipped_calls: int
    delta_usd: Money


class RepriceModelFigures(RepriceFigures, frozen=True, kw_only=True):
    """A run's figures for one model (as reported by the provider)."""

    model: str


class RepriceRun(RepriceFigures, frozen=True, kw_only=True):
    """One run: its terms (``start``/``end``: the window of call times, ``[start, end)``, null when open;
    ``modelFilter``: the models it was limited to, empty for all), its figures overall and per model (most changed
    first), and ``error`` when it failed."""

    run_id: uuid.UUID
    status: RepriceStatus
    dry_run: bool
    reason: str
    start: datetime | None
    end: datetime | None
    model_filter: list[str]
    price_file: str | None
    started_at: datetime
    finished_at: datetime | None
    matched_calls: int
    models: list[RepriceModelFigures]
    error: str | None


class RepriceRuns(WireOutput, frozen=True, kw_only=True):
    runs: list[RepriceRun]
    next_cursor: str | None


REPRICE_RUNS = query(
    "admin.repriceRuns",
    RepriceRunsInput,
    RepriceRuns,
    Access.ADMIN,
    "Reprice runs (dry and applied), newest first (paged), with rows scanned and changed and the total delta.",
)

ADMIN_REPRICE_PROCEDURES: Final = (REPRICE_RUNS,)
