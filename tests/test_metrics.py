"""``GET /metrics`` (``server/metrics.py``): after a known workload the counters say what the usage rows say.

Every test runs the real application over HTTP against the provider simulator; the expected figures are read from
``ai_usage_logs``, the money of record, never computed by the test.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.chat import SendMessageInput
from server.database import Database
from server.llm.ledger import Claim
from server.metrics import MAX_MODEL_LABELS, TOKEN_BUCKETS, Metrics
from server.services import build_services
from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import NewUser
from tests.conftest import ServedApp, app_database, fetch_rows, serve_app, simulator_env
from tests.usage_records import CATALOGUE, tokens

Labels = frozenset[tuple[str, str]]
EMAIL: dict[str, Any] = {"email": {"subject": "Q3", "body": "Please send the Q3 report to finance by Friday."}}
UNPRICED_MODEL = "gpt-99-experimental"


def parse(exposition: str) -> dict[str, dict[Labels, float]]:
    """Every sample of a Prometheus text exposition: sample name -> labels -> value."""
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def by(samples: Mapping[Labels, float], *names: str) -> dict[tuple[str, ...], float]:
    """Samples summed over every label but ``names``, keyed by those labels' values; zero sums left out."""
    sums: dict[tuple[str, ...], float] = {}
    for labels, value in samples.items():
        key = tuple(dict(labels)[name] for name in names)
        sums[key] = sums.get(key, 0.0) + value
    return {key: value for key, value in sums.items() if value}


async def scrape(url: str, **headers: str) -> dict[str, dict[Labels, float]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    return parse(response.text)


async def expected_from_usage_rows() -> dict[str, dict[tuple[str, ...], float]]:
    """What the counters must say, from ``ai_usage_logs`` alone."""
    rows = await fetch_rows(
        "SELECT provider, model, procedure, status, metadata->>'cache' AS cache, pricing_status, estimated_cost_usd,"
        f" saved_usd, {', '.join(f'{bucket}_tokens' for bucket in TOKEN_BUCKETS)} FROM ai_usage_logs"
    )
    calls: Tally[tuple[str, ...]] = Tally()
    durations: Tally[tuple[str, ...]] = Tally()
    unpriced: Tally[tuple[str, ...]] = Tally()
    token_sums: dict[tuple[str, ...], float] = {}
    cost: dict[tuple[str, ...], Decimal] = {}
    saved: dict[tuple[str, ...], Decimal] = {}
    for row in rows:
        series = (row["provider"], row["model"], row["procedure"])
        cache = "hit" if row["status"] == "cache_hit" else row["cache"] or "none"
        calls[(*series, row["status"], cache)] += 1
        if row["status"] != "cache_hit":
            durations[(*series, row["status"])] += 1
        if row["pricing_status"] == "unpriced":
            unpriced[(row["provider"], row["model"])] += 1
        for bucket in TOKEN_BUCKETS:
            key = (*series, bucket)
            token_sums[key] = token_sums.get(key, 0) + row[f"{bucket}_tokens"]
        cost[series] = cost.get(series, Decimal(0)) + (row["estimated_cost_usd"] or 0)
        if row["saved_usd"]:
            saved[(row["procedure"],)] = saved.get((row["procedure"],), Decimal(0)) + row["saved_usd"]
    return {
        "calls": {key: float(n) for key, n in calls.items()},
        "durations": {key: float(n) for key, n in durations.items()},
        "unpriced": {key: float(n) for key, n in unpriced.items()},
        "tokens": {key: float(n) for key, n in token_sums.items() if n},
        "cost": {key: float(amount) for key, amount in cost.items() if amount},
        "saved": {key: float(amount) for key, amount in saved.items() if amount},
    }


def assert_metrics_match(
    samples: dict[str, dict[Labels, float]], expected: dict[str, dict[tuple[str, ...], float]]
) -> None:
    series = ("provider", "model", "procedure")
    assert by(samples["tollbooth_llm_calls_total"], *series, "status", "cache") == expected["calls"]
    assert by(samples["tollbooth_llm_tokens_total"], *series, "bucket") == expected["tokens"]
    counts = samples["gen_ai_client_operation_duration_seconds_count"]
    assert by(counts, *series, "status") == expected["durations"]
    assert by(samples.get("tollbooth_llm_unpriced_calls_total", {}), "provider", "model") == expected["unpriced"]
    for name, key in (
        ("tollbooth_llm_cost_usd_total", series),
        ("tollbooth_llm_cache_saved_usd_total", ("procedure",)),
    ):
        got = by(samples.get(name, {}), *key)
        want = expected["cost" if name.endswith("cost_usd_total") else "saved"]
        assert got.keys() == want.keys(), name
        for labels, amount in want.items():
            assert math.isclose(got[labels], amount, rel_tol=1e-12), (name, labels, got[labels], amount)


@pytest.fixture
async def http(app_server: ServedApp, alice: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {alice.api_key}"}
    async with httpx.AsyncClient(base_url=f"{app_server.url}/trpc", headers=headers, timeout=30) as client:
        yield client


async def run_workload(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    """Calls of the three providers with every kind of outcome the counters distinguish."""
    sim.state.enqueue(
        ScriptedResponse(
            provider="openai", usage=ScriptedUsage(prompt=1_200, cached=1_024, completion=80, reasoning=30)
        )
    )
    await _ok(http, "chat.sendMessage", {"message": "Hi", "model": "gpt-4o-mini"})
    sim.state.enqueue(
        ScriptedResponse(
            provider="anthropic",
            usage=ScriptedUsage(input=40, cache_write_5m=2_000, cache_write_1h=500, cache_read=300, output=120),
        )
    )
    await _ok(http, "chat.sendMessage", {"message": "Hi", "model": "claude-haiku-4-5"})
    sim.state.enqueue(
        ScriptedResponse(provider="gemini", usage=ScriptedUsage(prompt=700, cached=100, completion=50, thoughts=25))
    )
    await _ok(http, "chat.sendMessage", {"message": "Hi", "model": "gemini-2.5-flash"})
    await _ok(http, "chat.sendMessage", {"message": "Hi", "model": UNPRICED_MODEL})
    sim.state.enqueue(ScriptedResponse(provider="anthropic", status=500))
    failed = await http.post("/chat.sendMessage", json={"message": "Hi", "model": "claude-haiku-4-5"})
    assert failed.status_code == 502, failed.text
    for _ in range(3):  # a miss, then two hits
        await _ok(http, "chat.summarizeEmail", {**EMAIL, "model": "gpt-4o-mini", "cache": {"mode": "use"}})
    for _ in range(2):  # the second is replayed
        await _ok(http, "chat.sendMessage", {"message": "Once", "model": "gpt-4o", "idempotencyKey": "k-1"})


async def _ok(http: httpx.AsyncClient, procedure: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/{procedure}", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["result"]["data"]
    return data


async def test_after_a_workload_of_the_three_providers_the_counters_match_the_usage_rows(
    app_server: ServedApp, http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    await run_workload(http, sim)

    samples = await scrape(app_server.url)
    expected = await expected_from_usage_rows()
    assert_metrics_match(samples, expected)
    # The workload reached every kind of series, so the comparison above compared something.
    assert {key[3:] for key in expected["calls"]} == {
        ("ok", "none"),
        ("error", "none"),
        ("ok", "miss"),
        ("cache_hit", "hit"),
    }
    assert {key[0] for key in expected["calls"]} == {"openai", "anthropic", "gemini"}
    # Every bucket a chat call fills (image tokens come only from image calls, which this workload makes none of).
    assert {key[3] for key in expected["tokens"]} == set(TOKEN_BUCKETS) - {"output_image"}
    assert expected["unpriced"] == {("openai", UNPRICED_MODEL): 1.0}
    assert expected["saved"]
    assert samples["tollbooth_idempotent_replays_total"] == {frozenset({("procedure", "chat.sendMessage")}): 1.0}
    assert samples["tollbooth_spool_records"] == {frozenset(): 0.0}
    buckets = {dict(labels)["le"] for labels in samples["gen_ai_client_operation_duration_seconds_bucket"]}
    assert {"0.01", "81.92", "+Inf"} <= buckets


async def test_a_call_refused_by_a_hard_budget_is_counted_by_scope_and_leaves_no_call(
    app_server: ServedApp, http: httpx.AsyncClient
) -> None:
    await app_database().execute(
        "INSERT INTO budgets (id, scope, period, limit_usd, hard, alert_thresholds)"
        " VALUES (gen_random_uuid(), 'global', 'day', 0, true, '{}')"
    )
    refused = await http.post("/chat.sendMessage", json={"message": "Hi", "model": "gpt-4o-mini"})
    assert refused.status_code == 402, refused.text

    samples = await scrape(app_server.url)
    assert samples["tollbooth_budget_rejections_total"] == {frozenset({("scope", "global")}): 1.0}
    assert "tollbooth_llm_calls_total" not in samples


async def test_a_call_spooled_while_the_database_is_down_counts_once_and_the_spool_depth_is_shown(
    sim: RunningSimulator, alice: NewUser, unreachable_database: Database, tmp_path: Path
) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path)))
    metrics = Metrics(spool_dir=settings.spool_dir)
    down = build_services(settings, unreachable_database, metrics=metrics)
    down.llm.ledger.hard_budgets_exist = False  # no budget to check: the call runs on a spooled claim
    await down.chat.send_message(alice.id, SendMessageInput(message="anyone?", model="gpt-4o"))
    samples = parse(metrics.exposition().decode())
    assert samples["tollbooth_spool_records"] == {frozenset(): 1.0}
    assert sum(samples["tollbooth_llm_calls_total"].values()) == 1.0

    up = build_services(settings, app_database(), metrics=metrics)
    assert await up.llm.replay_spool() == 1  # the record (it superseded the spooled claim)
    samples = parse(metrics.exposition().decode())
    assert samples["tollbooth_spool_records"] == {frozenset(): 0.0}
    assert_metrics_match(samples, await expected_from_usage_rows())  # the replay is not counted a second time


async def test_a_call_the_sweeper_settles_for_a_dead_process_is_counted_by_the_sweeping_one(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path
) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path)))
    metrics = Metrics(spool_dir=settings.spool_dir)
    services = build_services(settings, app_database(), metrics=metrics)
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
    claim = Claim(
        call_id=uuid.uuid4(),
        user_id=alice.id,
        conversation_id=None,
        procedure="chat.sendMessage",
        provider="anthropic",
        requested_model="claude-haiku-4-5",
        prompt_tokens_estimate=120,
        max_output_tokens=64,
        metadata={},
        created_at=started,
        lease_expires_at=started + datetime.timedelta(minutes=1),
    )
    await services.llm.ledger.claim(claim)  # as a process killed mid-call leaves it

    assert await services.llm.sweep() == 1
    samples = parse(metrics.exposition().decode())
    assert_metrics_match(samples, await expected_from_usage_rows())
    assert by(samples["tollbooth_llm_calls_total"], "status") == {("error",): 1.0}


async def test_metrics_token_is_required_when_set(sim: RunningSimulator, db: None, tmp_path: Path) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), METRICS_TOKEN="s3cret-scrape-token"))
    async with serve_app(settings) as served, httpx.AsyncClient(base_url=served.url) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret-scrape-token"}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "tollbooth" not in refused.text
        allowed = await http.get("/metrics", headers={"authorization": "Bearer s3cret-scrape-token"})
        assert allowed.status_code == 200
        assert "tollbooth_llm_calls_total" in allowed.text
        # Outside the tRPC router and the API description.
        schema = (await http.get("/schema/openapi.json")).json()
        assert not [path for path in schema["paths"] if "metrics" in path]


async def test_metrics_enabled_false_serves_no_metrics(sim: RunningSimulator, db: None, tmp_path: Path) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), METRICS_ENABLED="false"))
    async with serve_app(settings) as served, httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get("/metrics")).status_code == 404


def test_past_the_bound_on_model_names_further_models_are_labelled_other(tmp_path: Path) -> None:
    metrics = Metrics(spool_dir=tmp_path)
    for n in range(MAX_MODEL_LABELS + 5):
        metrics.observe(_record(model=f"ft:gpt-4o-mini:acme:{n}"))
    calls = parse(metrics.exposition().decode())["tollbooth_llm_calls_total"]
    models = Tally(dict(labels)["model"] for labels in calls)
    assert len(models) == MAX_MODEL_LABELS + 1
    assert calls[frozenset({**_LABELS, "model": "other"}.items())] == 5.0


def test_failed_calls_to_unknown_models_cannot_use_up_the_model_labels(tmp_path: Path) -> None:
    """A caller may ask for any model name; until a provider answers to it, it is counted as ``other``."""
    metrics = Metrics(spool_dir=tmp_path)
    for n in range(MAX_MODEL_LABELS + 5):
        metrics.observe(_record(model=f"gpt-junk-{n}", status="error"))
    metrics.observe(_record(model="gpt-4o-mini"))
    calls = parse(metrics.exposition().decode())["tollbooth_llm_calls_total"]
    assert calls[frozenset({**_LABELS, "model": "gpt-4o-mini"}.items())] == 1.0
    assert calls[frozenset({**_LABELS, "model": "other", "status": "error"}.items())] == MAX_MODEL_LABELS + 5
    assert {dict(labels)["model"] for labels in calls} == {"gpt-4o-mini", "other"}


_LABELS = {"provider": "openai", "procedure": "chat.sendMessage", "status": "ok", "cache": "none"}


def _record(*, model: str = "gpt-4o-mini", status: str = "ok") -> Any:
    from server.llm.recorder import UsageRecord

    at = datetime.datetime.now(datetime.UTC)
    usage = tokens(100, output=10)
    return UsageRecord(
        call_id=uuid.uuid4(),
        created_at=at,
        user_id=None,
        conversation_id=None,
        conversation_title="",
        procedure="chat.sendMessage",
        provider="openai",
        requested_model=model,
        model=model,
        usage=usage,
        priced=CATALOGUE.price("openai", model, usage, at),
        latency_ms=250,
        status="ok" if status == "ok" else "error",
    )
