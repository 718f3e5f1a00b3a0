"""Prometheus metrics: what the service's model calls cost and did, for rates, latency and alerts.

Money of record stays in PostgreSQL (the usage rows); these counters are its live shadow for PromQL, as floats of the
exact ``Decimal`` amounts. Every call is counted at one point, once its record is settled (written, or spooled when
the database is down): ``Metrics.observe`` from ``LLMCore`` for live calls, cache hits and failures, and from the
claim sweeper for calls of a process that died. Nothing here runs inside a SQL transaction.

Series (bounded labels only, never a user, conversation or call id):

- ``tollbooth_llm_calls_total{provider,model,procedure,status,cache}``: ``status`` is the usage row's (``ok``,
  ``error``, ``cancelled``, ``cache_hit``); ``cache`` is ``hit`` (answered by the response cache), ``miss`` (a lookup
  found nothing, so the provider was called), ``refresh`` (the caller asked to replace the entry) or ``none`` (no
  cache policy).
- ``tollbooth_llm_tokens_total{provider,model,procedure,bucket}``: the canonical buckets of ``TokenUsage``
  (``TOKEN_BUCKETS``; ``reasoning`` is a subset of ``output``, as in the usage rows).
- ``tollbooth_llm_cost_usd_total{provider,model,procedure}``, ``tollbooth_llm_cache_saved_usd_total{procedure}``.
- ``gen_ai_client_operation_duration_seconds{provider,model,procedure,status}``: OpenTelemetry GenAI's histogram of
  the provider call's duration, with its advisory bucket boundaries; cache hits make no provider call and are left out.
- ``tollbooth_llm_unpriced_calls_total{provider,model}``, ``tollbooth_budget_rejections_total{scope}`` (``global``,
  ``user``, ``conversation``), ``tollbooth_idempotent_replays_total{procedure}``.
- ``tollbooth_spool_records``: usage records waiting in the spool for the database, counted on disk at each scrape
  (so every worker reports the same number, and a record spooled by a worker that died still counts).

``model`` is the model the provider reported, so a provider could send arbitrary names: each process keeps at most
``MAX_MODEL_LABELS`` distinct ones and labels the rest ``other``. A name takes a label only when a provider answered
to it or the price data knows it; a failed call to a name neither knows is ``other`` (a caller cannot use up the
labels with invented names).

Several worker processes: ``WORKERS`` > 1 runs the service in prometheus-client's multiprocess mode, in a directory
the service manages (``server.workers``); a scrape of any worker then reads every worker's values. With one process
the metrics live in a registry of the application's own.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from server.llm.response_cache import CACHE_LABEL

if TYPE_CHECKING:
    from server.llm.recorder import UsageRecord

__all__ = (
    "CONTENT_TYPE",
    "DURATION_BUCKETS_SECONDS",
    "MAX_MODEL_LABELS",
    "MULTIPROCESS_DIRECTORY_VARIABLE",
    "TOKEN_BUCKETS",
    "Metrics",
)

MULTIPROCESS_DIRECTORY_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

TOKEN_BUCKETS: Final = (
    "input",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "reasoning",
    "output_image",
)
"""The ``TokenUsage`` fields counted by ``tollbooth_llm_tokens_total``, each its ``bucket`` label: a new bucket is one
more name here."""

DURATION_BUCKETS_SECONDS: Final = tuple(0.01 * 2**power for power in range(14))
"""OpenTelemetry GenAI's advisory boundaries for ``gen_ai.client.operation.duration``: 0.01 s doubling to 81.92 s."""

MAX_MODEL_LABELS: Final = 100
_ANSWERED: Final = frozenset({"ok", "cache_hit"})
"""The statuses of calls a provider answered (a cache hit was answered once)."""
OTHER_MODEL: Final = "other"

_token_counts: Final = operator.attrgetter(*TOKEN_BUCKETS)

# The ``_created`` series (a gauge per label set) double the output and are not kept in multiprocess mode anyway.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class _Series:
    """The children of one label set, looked up once: a call then costs a dict lookup and a few increments."""

    calls: Counter
    tokens: tuple[Counter, ...]
    cost: Counter
    duration: Histogram
    unpriced: Counter


class _SpoolCollector(Collector):
    """``tollbooth_spool_records``, read from the spool directory at each scrape."""

    def __init__(self, spool_dir: Path) -> None:
        self._spool_dir = spool_dir

    def collect(self) -> Iterator[Metric]:
        try:
            waiting = sum(1 for _ in self._spool_dir.glob("*.json"))
        except OSError:
            waiting = 0
        yield GaugeMetricFamily(
            "tollbooth_spool_records", "Usage records waiting in the spool for the database.", value=waiting
        )


class Metrics:
    """The service's metrics: built once per application; ``observe`` and the counters' helpers are cheap.

    ``enabled=False`` (``METRICS_ENABLED=false``) makes every method a no-op and ``/metrics`` is not served.
    ``spool_dir`` is where ``tollbooth_spool_records`` counts the waiting records. Multiprocess mode is on when
    ``PROMETHEUS_MULTIPROC_DIR`` was set before prometheus-client was first imported (``server.workers`` does it).
    """

    def __init__(self, *, spool_dir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.multiprocess = MULTIPROCESS_DIRECTORY_VARIABLE in os.environ
        self._spool = _SpoolCollector(spool_dir)
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self._calls = Counter(
            "tollbooth_llm_calls_total",
            "Model calls by outcome (the usage row's status) and response cache use.",
            ("provider", "model", "procedure", "status", "cache"),
            registry=registry,
        )
        self._tokens = Counter(
            "tollbooth_llm_tokens_total",
            "Tokens by canonical bucket (reasoning is a part of output).",
            ("provider", "model", "procedure", "bucket"),
            registry=registry,
        )
        self._cost = Counter(
            "tollbooth_llm_cost_usd_total",
            "Cost of model calls in USD (a float of the exact amount kept in PostgreSQL).",
            ("provider", "model", "procedure"),
            registry=registry,
        )
        self._saved = Counter(
            "tollbooth_llm_cache_saved_usd_total",
            "What answers from the response cache saved, in USD at the rates of the day of the hit.",
            ("procedure",),
            registry=registry,
        )
        self._duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of provider calls (GenAI client operation), cache hits excluded.",
            ("provider", "model", "procedure", "status"),
            buckets=DURATION_BUCKETS_SECONDS,
            registry=registry,
        )
        self._unpriced = Counter(
            "tollbooth_llm_unpriced_calls_total",
            "Model calls whose model has no known price (their cost is unknown, not zero).",
            ("provider", "model"),
            registry=registry,
        )
        self._budget_rejections = Counter(
            "tollbooth_budget_rejections_total",
            "Calls refused by a hard budget, by the budget's scope.",
            ("scope",),
            registry=registry,
        )
        self._idempotent_replays = Counter(
            "tollbooth_idempotent_replays_total",
            "Requests answered from a stored result by their idempotency key.",
            ("procedure",),
            registry=registry,
        )
        if not self.multiprocess:
            registry.register(self._spool)
        self._series: dict[tuple[str, str, str, str, str], _Series] = {}
        self._models: set[str] = set()

    def observe(self, record: UsageRecord) -> None:
        """Count one settled call: its outcome, tokens, cost, duration, and what a cache hit saved."""
        if not self.enabled:
            return
        status = record.status
        if status == "cache_hit":
            cache = "hit"
        else:
            label = record.metadata.get(CACHE_LABEL)
            cache = label if label == "miss" or label == "refresh" else "none"
        key = (record.provider, record.model, record.procedure, status, cache)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key, known=status in _ANSWERED or record.priced.status == "priced")
        series.calls.inc()
        for child, count in zip(series.tokens, _token_counts(record.usage), strict=True):
            if count:
                child.inc(count)
        priced = record.priced
        if priced.total_cost:
            series.cost.inc(float(priced.total_cost))
        if priced.status == "unpriced":
            series.unpriced.inc()
        if status == "cache_hit":
            if record.saved_usd:
                self._saved.labels(record.procedure).inc(float(record.saved_usd))
        else:
            series.duration.observe(record.latency_ms / 1000)

    def _new_series(self, key: tuple[str, str, str, str, str], *, known: bool) -> _Series:
        provider, model, procedure, status, cache = key
        if model not in self._models and model != OTHER_MODEL:
            # A name takes one of the bounded labels only when a provider answered to it or the price data knows it:
            # a failed call's model is whatever its caller asked for, and callers must not use up the labels.
            if not known or len(self._models) >= MAX_MODEL_LABELS:
                other = (provider, OTHER_MODEL, procedure, status, cache)
                return self._series.get(other) or self._new_series(other, known=True)
            self._models.add(model)
        series = _Series(
            calls=self._calls.labels(provider, model, procedure, status, cache),
            tokens=tuple(self._tokens.labels(provider, model, procedure, bucket) for bucket in TOKEN_BUCKETS),
            cost=self._cost.labels(provider, model, procedure),
            duration=self._duration.labels(provider, model, procedure, status),
            unpriced=self._unpriced.labels(provider, model),
        )
        self._series[key] = series
        return series

    def budget_rejected(self, scope: str) -> None:
        """Count a call refused by a hard budget of ``scope`` (``global``, ``user`` or ``conversation``)."""
        if self.enabled:
            self._budget_rejections.labels(scope).inc()

    def idempotent_replayed(self, procedure: str) -> None:
        """Count a request answered from its idempotency key's stored result."""
        if self.enabled:
            self._idempotent_replays.labels(procedure).inc()

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (``CONTENT_TYPE``): this process's, or in multiprocess mode
        every worker's, read from the shared directory (blocking file reads: call it in a thread)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._spool)
        return generate_latest(registry)
