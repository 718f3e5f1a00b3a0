"""Proof that every conversation's stored totals are the sums over its usage rows.

The recorder increments the totals in the same statement that inserts a usage row, so there must never be a
difference; this check is how an operator (``python -m server check-totals``) or a test verifies it after the fact.
The sums are computed in one pass over ``ai_usage_logs`` inside a single snapshot; only the conversations that differ
come back to Python, where the difference is spelled out field by field.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from server.conversations import StoredShare, distribution_decoder
from server.database import Database

__all__ = ("ConsistencyReport", "RollupDifference", "TotalsDifference", "check_totals")

TOTAL_FIELDS: Final = (
    "total_prompt_tokens",
    "total_completion_tokens",
    "total_tokens_used",
    "total_cost_usd",
    "llm_calls",
    "unpriced_calls",
)

# Model distribution costs are compared as numbers: the stored text may carry more or fewer trailing zeros.
_DIFFERENCES: Final = """
WITH per_model AS (
    SELECT conversation_id, model,
           count(*) AS calls,
           count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_calls,
           sum(input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens) AS prompt_tokens,
           sum(output_tokens + output_image_tokens) AS output_tokens,
           coalesce(sum(estimated_cost_usd), 0) AS cost_usd
    FROM ai_usage_logs
    WHERE conversation_id IS NOT NULL
    GROUP BY conversation_id, model
), actual AS (
    SELECT conversation_id,
           sum(prompt_tokens)::bigint AS total_prompt_tokens,
           sum(output_tokens)::bigint AS total_output_tokens,
           sum(prompt_tokens + output_tokens)::bigint AS total_tokens_used,
           sum(cost_usd) AS total_cost_usd,
           sum(calls)::bigint AS llm_calls,
           sum(unpriced_calls)::bigint AS unpriced_calls,
           jsonb_object_agg(model, jsonb_build_object(
               'calls', calls, 'unpriced', unpriced_calls, 'tokens', prompt_tokens + output_tokens,
               'cost_usd', cost_usd)) AS distribution
    FROM per_model
    GROUP BY conversation_id
), compared AS (
    SELECT coalesce(c.id, a.conversation_id) AS conversation_id,
           c.id IS NOT NULL AS stored,
           c.total_prompt_tokens, c.total_completion_tokens, c.total_tokens_used, c.total_cost_usd, c.llm_calls,
           c.unpriced_calls, c.model_distribution::text AS model_distribution,
           (SELECT jsonb_object_agg(key, jsonb_build_object(
                'calls', (value ->> 'calls')::bigint,
                'unpriced', coalesce((value ->> 'unpriced')::bigint, 0),
                'tokens', (value ->> 'tokens')::bigint,
                'cost_usd', (value ->> 'cost_usd')::numeric))
            FROM jsonb_each(c.model_distribution)) AS stored_distribution,
           coalesce(a.total_prompt_tokens, 0) AS actual_prompt_tokens,
           coalesce(a.total_output_tokens, 0) AS actual_output_tokens,
           coalesce(a.total_tokens_used, 0) AS actual_tokens_used,
           coalesce(a.total_cost_usd, 0) AS actual_cost_usd,
           coalesce(a.llm_calls, 0) AS actual_llm_calls,
           coalesce(a.unpriced_calls, 0) AS actual_unpriced_calls,
           coalesce(a.distribution, '{}'::jsonb) AS actual_distribution
    FROM conversations c
    FULL JOIN actual a ON a.conversation_id = c.id
)
SELECT *, actual_distribution::text AS actual_distribution_text,
       (SELECT count(*) FROM conversations) AS conversations
FROM compared
WHERE NOT stored
   OR total_prompt_tokens <> actual_prompt_tokens
   OR total_completion_tokens <> actual_output_tokens
   OR total_tokens_used <> actual_tokens_used
   OR total_cost_usd <> actual_cost_usd
   OR llm_calls <> actual_llm_calls
   OR unpriced_calls <> actual_unpriced_calls
   OR coalesce(stored_distribution, '{}'::jsonb) <> actual_distribution
ORDER BY conversation_id
"""
_COUNT: Final = "SELECT count(*) AS conversations FROM conversations"

ROLLUP_SUMS: Final = (
    "calls",
    "error_calls",
    "cancelled_calls",
    "unpriced_calls",
    "estimated_calls",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "output_image_tokens",
    "cost_usd",
)
_ROLLUP_DIFFERENCES: Final = f"""
WITH actual AS (
    SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS period_start,
           procedure, provider, model,
           count(*) AS calls,
           count(*) FILTER (WHERE status = 'error') AS error_calls,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled_calls,
           count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_calls,
           count(*) FILTER (WHERE usage_estimated) AS estimated_calls,
           sum(input_tokens) AS input_tokens,
           sum(cache_read_tokens) AS cache_read_tokens,
           sum(cache_write_5m_tokens) AS cache_write_5m_tokens,
           sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
           sum(output_tokens) AS output_tokens,
           sum(reasoning_tokens) AS reasoning_tokens,
           sum(output_image_tokens) AS output_image_tokens,
           coalesce(sum(estimated_cost_usd), 0) AS cost_usd
    FROM ai_usage_logs
    GROUP BY 1, 2, 3, 4
)
SELECT period_start, procedure, provider, model,
       {", ".join(f"r.{s} AS stored_{s}, a.{s} AS actual_{s}" for s in ROLLUP_SUMS)}
FROM (
    SELECT period_start, procedure, provider, model, {", ".join(f"sum({s}) AS {s}" for s in ROLLUP_SUMS)}
    FROM ai_usage_rollup
    GROUP BY period_start, procedure, provider, model
) r
FULL JOIN actual a USING (period_start, procedure, provider, model)
-- A rollup key whose rows were all deleted keeps rows at zero: missing and zero are the same figure.
WHERE {" OR ".join(f"coalesce(r.{s}, 0) <> coalesce(a.{s}, 0)" for s in ROLLUP_SUMS)}
ORDER BY period_start, procedure, provider, model
"""


class TotalsDifference(msgspec.Struct, frozen=True, kw_only=True):
    """One stored figure that is not the sum over the rows. ``field`` is a totals column, ``conversation`` when
    usage rows name a conversation that does not exist, or
    ``model_distribution.<model>.<calls|unpriced|tokens|cost_usd>``."""

    conversation_id: uuid.UUID
    field: str
    stored: str
    actual: str

    def __str__(self) -> str:
        return (
            f"conversation {self.conversation_id}: {self.field} is {self.stored}, the usage rows sum to {self.actual}"
        )


class RollupDifference(msgspec.Struct, frozen=True, kw_only=True):
    """A figure of ``ai_usage_rollup`` that is not the sum over the usage rows of its period (``absent``: no row)."""

    period_start: datetime
    procedure: str
    provider: str
    model: str
    field: str
    stored: str
    actual: str

    def __str__(self) -> str:
        return (
            f"usage rollup {self.period_start.isoformat()} {self.procedure} {self.provider} {self.model}: "
            f"{self.field} is {self.stored}, the usage rows sum to {self.actual}"
        )


class ConsistencyReport(msgspec.Struct, frozen=True, kw_only=True):
    conversations: int
    differences: list[TotalsDifference]
    rollup_differences: list[RollupDifference] = msgspec.field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.differences and not self.rollup_differences


def _distribution_differences(conversation_id: uuid.UUID, stored: str, actual: str) -> list[TotalsDifference]:
    stored_shares = distribution_decoder.decode(stored)
    actual_shares = distribution_decoder.decode(actual)
    missing = StoredShare()
    differences = []
    for model in sorted(stored_shares.keys() | actual_shares.keys()):
        was, sums = stored_shares.get(model, missing), actual_shares.get(model, missing)
        for part in ("calls", "unpriced", "tokens", "cost_usd"):
            if getattr(was, part) != getattr(sums, part):
                differences.append(
                    TotalsDifference(
                        conversation_id=conversation_id,
                        field=f"model_distribution.{model}.{part}",
                        stored=str(getattr(was, part)) if model in stored_shares else "absent",
                        actual=str(getattr(sums, part)),
                    )
                )
    return differences


def _row_differences(row: asyncpg.Record) -> list[TotalsDifference]:
    conversation_id: uuid.UUID = row["conversation_id"]
    if not row["stored"]:
        return [
            TotalsDifference(
                conversation_id=conversation_id,
                field="conversation",
                stored="absent",
                actual=f"{row['actual_llm_calls']} usage rows",
            )
        ]
    actual_columns = {
        "total_prompt_tokens": "actual_prompt_tokens",
        "total_completion_tokens": "actual_output_tokens",  # the output buckets, text and image (DESIGN's name)
        "total_tokens_used": "actual_tokens_used",
        "total_cost_usd": "actual_cost_usd",
        "llm_calls": "actual_llm_calls",
        "unpriced_calls": "actual_unpriced_calls",
    }
    differences = [
        TotalsDifference(
            conversation_id=conversation_id, field=field, stored=str(row[field]), actual=str(row[actual_columns[field]])
        )
        for field in TOTAL_FIELDS
        if row[field] != row[actual_columns[field]]
    ]
    differences += _distribution_differences(
        conversation_id, row["model_distribution"], row["actual_distribution_text"]
    )
    return differences


def _rollup_differences(row: asyncpg.Record) -> list[RollupDifference]:
    return [
        RollupDifference(
            period_start=row["period_start"],
            procedure=row["procedure"],
            provider=row["provider"],
            model=row["model"],
            field=field,
            stored="absent" if row[f"stored_{field}"] is None else str(row[f"stored_{field}"]),
            actual="absent" if row[f"actual_{field}"] is None else str(row[f"actual_{field}"]),
        )
        for field in ROLLUP_SUMS
        if row[f"stored_{field}"] != row[f"actual_{field}"]
    ]


async def check_totals(db: Database, *, rollup: bool = True) -> ConsistencyReport:
    """Compare every conversation's six totals and model distribution with the sums over its usage rows, and (with
    ``rollup``) every period of ``ai_usage_rollup`` with the sums over the usage rows of that period."""
    async with db.snapshot() as connection:
        rows = await connection.fetch(_DIFFERENCES)
        count = rows[0]["conversations"] if rows else (await connection.fetchval(_COUNT))
        rollup_rows = await connection.fetch(_ROLLUP_DIFFERENCES) if rollup else []
    return ConsistencyReport(
        conversations=count,
        differences=[difference for row in rows for difference in _row_differences(row)],
        rollup_differences=[difference for row in rollup_rows for difference in _rollup_differences(row)],
    )
