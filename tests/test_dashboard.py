"""The Grafana dashboard (``monitoring/``) is real: its provisioning names the data sources its panels use; every SQL
panel, with Grafana's macros expanded as Grafana expands them, runs on the database after a known workload of real
calls through the service and returns the figures the usage rows add up to; every PromQL panel, evaluated by a real
Prometheus scraping the service's ``/metrics``, returns series (README, "Monitoring: the dashboard")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import NewUser, create_user
from tests.conftest import ROOT, ServedApp, app_database, fetch_rows, serve_app, simulator_env
from tests.docs_snippets import fenced
from tests.grafana import expand_postgres_macros, expand_prometheus_variables, go_float, rfc3339_nano

MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "tollbooth.json"
POSTGRES_UID, PROMETHEUS_UID = "tollbooth-postgres", "tollbooth-prometheus"
DAY = 86_400


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels() -> dict[str, dict[str, Any]]:
    return {panel["title"]: panel for panel in _dashboard()["panels"]}


def _sql(title: str) -> str:
    [target] = _panels()[title]["targets"]
    sql: str = target["rawSql"]
    return sql


def _yaml(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


# --- structure ----------------------------------------------------------------------------------------------------


def test_provisioning_names_both_data_sources_by_fixed_uid_and_loads_the_dashboards_folder() -> None:
    [datasources_file] = (MONITORING / "grafana" / "provisioning" / "datasources").glob("*.yaml")
    sources = {source["uid"]: source for source in _yaml(datasources_file)["datasources"]}
    assert set(sources) == {POSTGRES_UID, PROMETHEUS_UID}
    assert sources[POSTGRES_UID]["type"] == "grafana-postgresql-datasource"
    assert sources[PROMETHEUS_UID]["type"] == "prometheus"
    # Addresses and credentials come from the environment, never from the repository.
    assert re.fullmatch(r"\$\{\w+\}", sources[POSTGRES_UID]["url"])
    assert re.fullmatch(r"\$\{\w+\}", sources[POSTGRES_UID]["secureJsonData"]["password"])
    assert re.fullmatch(r"\$\{\w+\}", sources[PROMETHEUS_UID]["url"])

    [dashboards_file] = (MONITORING / "grafana" / "provisioning" / "dashboards").glob("*.yaml")
    [provider] = _yaml(dashboards_file)["providers"]
    assert provider["type"] == "file"
    assert re.fullmatch(r"\$\{\w+\}", provider["options"]["path"])


def test_the_dashboard_is_grafana_json_whose_panels_use_the_provisioned_data_sources() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["time"] == {"from": "now-30d", "to": "now"}
    assert "timepicker" in dashboard
    assert dashboard["uid"] == "tollbooth"
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    types = {POSTGRES_UID: "grafana-postgresql-datasource", PROMETHEUS_UID: "prometheus"}
    for panel in panels:
        uid = panel["datasource"]["uid"]
        assert uid in types, panel["title"]
        assert panel["datasource"]["type"] == types[uid]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            query = target["rawSql"] if uid == POSTGRES_UID else target["expr"]
            assert query.strip(), panel["title"]
            if uid == POSTGRES_UID:
                assert target["format"] in {"time_series", "table"}
                assert target["rawQuery"] is True


def test_the_brief_s_panels_are_there() -> None:
    titles = set(_panels())
    assert {
        "Daily cost by procedure",
        "Response cache growth (persona cache)",
        "Idempotent requests over time",
        "Cost by model",
        "Cache hit ratio",
        "Spend vs budget (current period)",
        "Unpriced calls",
        "Savings from cache and de-duplication",
        "Reconciliation: conversation totals minus their usage rows (must read 0)",
    } <= titles


def test_the_readme_shows_every_panel_s_query_as_the_dashboard_stores_it() -> None:
    blocks = {snippet.code.strip() for snippet in fenced(ROOT / "README.md") if snippet.language in {"sql", "promql"}}
    for panel in _dashboard()["panels"]:
        for target in panel["targets"]:
            assert (target.get("rawSql") or target["expr"]).strip() in blocks, panel["title"]


async def test_the_readme_s_read_only_role_can_run_every_sql_panel(db: None) -> None:
    [grants] = [s.code for s in fenced(ROOT / "README.md", "sql") if s.code.startswith("CREATE ROLE tollbooth_grafana")]
    role = f"tollbooth_grafana_{uuid.uuid4().hex[:8]}"
    database = app_database()
    await database.execute(grants.replace("tollbooth_grafana", role))
    start, end = _window()
    try:
        async with database.snapshot() as connection:
            await connection.execute(f"SET LOCAL ROLE {role}")
            for panel in _dashboard()["panels"]:
                if panel["datasource"]["uid"] == POSTGRES_UID:
                    await connection.fetch(expand_postgres_macros(_sql(panel["title"]), start, end))
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.fetch("SELECT api_key_hash FROM users")
    finally:
        await database.execute(f"DROP OWNED BY {role}")
        await database.execute(f"DROP ROLE {role}")


# --- the macro expander, against Grafana's own cases (macros_test.go) ---------------------------------------------

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
TO = FROM + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("sql", "expanded"),
    [
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        ("SELECT $__timeGroup(time_column,'5m')", "SELECT floor(extract(epoch from time_column)/300)*300"),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
        ),
        ("$__timeGroup(time_column , '5m')", "floor(extract(epoch from time_column)/300)*300"),
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        ),
        (
            "SELECT $__timeGroup(time_column,'5m') as time, value",
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
        ),
        ("$__timeGroupAlias(created_at, '1d')", 'floor(extract(epoch from created_at)/86400)*86400 AS "time"'),
        ("$__timeGroup(t, '2w')", "floor(extract(epoch from t)/1.2096e+06)*1.2096e+06"),
        ("$__timeGroup(t, 20ms)", "floor(extract(epoch from t)/0.02)*0.02"),
        ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
        ("select $__time(time_column)", 'select time_column AS "time"'),
    ],
)
def test_postgres_macros_expand_as_grafana_expands_them(sql: str, expanded: str) -> None:
    assert expand_postgres_macros(sql, FROM, TO) == expanded


def test_macro_times_are_go_rfc3339_nano_in_utc() -> None:
    assert rfc3339_nano(datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=UTC)) == "1960-02-01T07:00:00.5Z"
    assert rfc3339_nano(datetime.fromisoformat("2026-11-29T16:00:00.123+01:00")) == "2026-11-29T15:00:00.123Z"
    assert [go_float(x) for x in (86_400.0, 604_800.0, 1e6, 0.0001, 0.00001)] == [
        "86400",
        "604800",
        "1e+06",
        "0.0001",
        "1e-05",
    ]


def test_an_unknown_macro_or_variable_fails_like_grafana() -> None:
    with pytest.raises(ValueError, match="unknown macro"):
        expand_postgres_macros("SELECT $__nope(x)", FROM, TO)
    with pytest.raises(ValueError, match="missing time column"):
        expand_postgres_macros("WHERE $__timeFilter()", FROM, TO)
    assert expand_prometheus_variables("rate(x[$__rate_interval])", {"__rate_interval": "1m"}) == "rate(x[1m])"
    with pytest.raises(ValueError, match="unknown variable"):
        expand_prometheus_variables("rate(x[$__range])", {"__rate_interval": "1m"})


# --- every SQL panel after a known workload -----------------------------------------------------------------------


@pytest.fixture
async def root(db: None) -> NewUser:
    return await create_user("root", is_admin=True)


def _http(app_server: ServedApp, user: NewUser) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{app_server.url}/trpc", headers={"authorization": f"Bearer {user.api_key}"}, timeout=60
    )


async def _call(http: httpx.AsyncClient, procedure: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await http.post(f"/{procedure}", json=body)
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()["result"]["data"] if status == 200 else response.json()
    return data


class Workload:
    """What the known workload answered, and the bob whose hard budget refused him."""

    def __init__(self, answers: dict[str, dict[str, Any]], bob: NewUser) -> None:
        self.answers = answers
        self.bob = bob


EMAIL: dict[str, Any] = {"email": {"subject": "Q3", "body": "Please send the Q3 report to finance by Friday."}}


async def run_workload(app_server: ServedApp, sim: RunningSimulator, alice: NewUser, root: NewUser) -> Workload:
    """Three providers, two procedures, a response cache miss then hit, provider prompt caching, an idempotent
    replay, an unpriced model, a provider error, a soft global budget and a hard budget that refuses a call."""
    bob = await create_user("bob")
    answers: dict[str, dict[str, Any]] = {}
    async with _http(app_server, root) as admin, _http(app_server, alice) as http, _http(app_server, bob) as bobs:
        await _call(admin, "admin.setBudget", {"scope": "global", "period": "day", "limitUsd": "100", "hard": False})
        await _call(
            admin,
            "admin.setBudget",
            {"scope": "user", "subjectId": str(bob.id), "period": "day", "limitUsd": "0.000000001"},
        )
        cached = {"message": "What is a token?", "model": "gpt-4o-mini", "cache": {"mode": "use"}}
        answers["miss"] = await _call(http, "chat.sendMessage", cached)
        answers["hit"] = await _call(http, "chat.sendMessage", cached)
        sim.state.enqueue(
            ScriptedResponse(provider="anthropic", usage=ScriptedUsage(input=900, cache_read=4_000, output=60))
        )
        answers["anthropic"] = await _call(http, "chat.sendMessage", {"message": "Hi", "model": "claude-haiku-4-5"})
        answers["gemini"] = await _call(http, "chat.summarizeEmail", {**EMAIL, "model": "gemini-2.5-flash"})
        once = {"message": "Charge me once", "model": "gpt-4o", "idempotencyKey": "dashboard-1"}
        answers["idempotent"] = await _call(http, "chat.sendMessage", once)
        answers["replay"] = await _call(http, "chat.sendMessage", once)
        answers["unpriced"] = await _call(http, "chat.sendMessage", {"message": "Hi", "model": "gpt-99-experimental"})
        sim.state.enqueue(ScriptedResponse(provider="openai", status=500))
        await _call(http, "chat.sendMessage", {"message": "Fail", "model": "gpt-4o"}, status=502)
        refused = await _call(bobs, "chat.sendMessage", {"message": "Hi", "model": "gpt-4o"}, status=402)
        answers["refused"] = refused
    return Workload(answers, bob)


def _window() -> tuple[datetime, datetime]:
    """A dashboard time range around the workload: from yesterday's UTC midnight to a minute from now."""
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1), now + timedelta(minutes=1)


async def _run_panel(title: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return await fetch_rows(expand_postgres_macros(_sql(title), start, end))


def _day_of(at: datetime) -> int:
    """Grafana's ``$__timeGroup(column, '1d')``: the epoch second of the UTC day."""
    return int(at.timestamp()) // DAY * DAY


def _group_cost(rows: list[dict[str, Any]]) -> Decimal | None:
    """What a group of usage rows cost: null when every call was unpriced (unknown, not free)."""
    if rows and all(row["pricing_status"] == "unpriced" for row in rows):
        return None
    return sum((row["estimated_cost_usd"] or Decimal(0) for row in rows), Decimal(0))


async def test_every_sql_panel_returns_what_the_usage_rows_add_up_to(
    app_server: ServedApp, sim: RunningSimulator, alice: NewUser, root: NewUser
) -> None:
    workload = await run_workload(app_server, sim, alice, root)
    rows = await fetch_rows("SELECT * FROM ai_usage_logs ORDER BY created_at")
    statuses = sorted(row["status"] for row in rows)
    assert statuses == ["cache_hit", "error", "ok", "ok", "ok", "ok", "ok"], "the workload is what it says"
    start, end = _window()
    panels = {panel["title"] for panel in _dashboard()["panels"] if panel["datasource"]["uid"] == POSTGRES_UID}
    checked: set[str] = set()

    # Daily cost by procedure: the hand-summed usage rows of each UTC day and procedure.
    title = "Daily cost by procedure"
    by_day_procedure: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day_procedure[(_day_of(row["created_at"]), row["procedure"])].append(row)
    got = await _run_panel(title, start, end)
    assert list(got[0]) == ["time", "metric", "cost_usd"]
    assert {(int(r["time"]), r["metric"]): r["cost_usd"] for r in got} == {
        key: _group_cost(group) for key, group in by_day_procedure.items()
    }
    summaries = [r["cost_usd"] for r in got if r["metric"] == "chat.summarizeEmail"]
    assert summaries == [Decimal(workload.answers["gemini"]["costUsd"])]
    checked.add(title)

    # Cost by model: every reported model, the unpriced one with no cost and last.
    title = "Cost by model"
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_model[(row["model"], row["provider"])].append(row)
    got = await _run_panel(title, start, end)
    assert list(got[0]) == ["model", "provider", "calls", "unpriced_calls", "cost_usd"]
    assert {(r["model"], r["provider"]): (r["calls"], r["unpriced_calls"], r["cost_usd"]) for r in got} == {
        key: (len(group), sum(row["pricing_status"] == "unpriced" for row in group), _group_cost(group))
        for key, group in by_model.items()
    }
    assert got[-1]["model"] == "gpt-99-experimental"
    assert got[-1]["cost_usd"] is None
    assert [r["cost_usd"] for r in got[:-1]] == sorted((r["cost_usd"] for r in got[:-1]), reverse=True)
    checked.add(title)

    # Cache hit ratio: one miss, one hit.
    title = "Cache hit ratio"
    got = await _run_panel(title, start, end)
    assert got == [{"time": Decimal(_day_of(rows[0]["created_at"])), "hit_ratio": 0.5}]
    checked.add(title)

    # Response cache growth: the one entry the miss stored, live.
    title = "Response cache growth (persona cache)"
    got = await _run_panel(title, start, end)
    [live] = await fetch_rows("SELECT count(*) AS entries FROM response_cache")
    assert live["entries"] == 1
    assert got == [
        {
            "time": datetime.fromtimestamp(_day_of(rows[0]["created_at"]), UTC),
            "created": 1,
            "expired": 0,
            "live_entries": 1,
        }
    ]
    checked.add(title)

    # Idempotent requests: the one replay.
    title = "Idempotent requests over time"
    got = await _run_panel(title, start, end)
    assert got == [
        {
            "time": datetime.fromtimestamp(_day_of(rows[0]["created_at"]), UTC),
            "metric": "chat.sendMessage",
            "replays": 1,
        }
    ]
    assert workload.answers["replay"]["messageId"] == workload.answers["idempotent"]["messageId"]
    checked.add(title)

    # Spend vs budget: the global budget holds every settled cost of the day; bob's refused call spent nothing.
    title = "Spend vs budget (current period)"
    got = await _run_panel(title, start, end)
    assert list(got[0]) == ["budget", "limit_usd", "spent_usd", "reserved_usd", "used_ratio", "hard"]
    by_budget = {r["budget"]: r for r in got}
    assert set(by_budget) == {"global / day", "user bob / day"}
    total = sum((row["estimated_cost_usd"] or Decimal(0) for row in rows), Decimal(0))
    assert total > 0
    assert by_budget["global / day"]["spent_usd"] == total
    assert by_budget["global / day"]["used_ratio"] == total / 100
    assert by_budget["global / day"]["hard"] is False
    assert (by_budget["user bob / day"]["spent_usd"], by_budget["user bob / day"]["hard"]) == (0, True)
    assert workload.answers["refused"]["error"]["data"]["code"] == "PAYMENT_REQUIRED"
    checked.add(title)

    # Unpriced calls: the one call to a model without a price.
    title = "Unpriced calls"
    got = await _run_panel(title, start, end)
    [unpriced] = [row for row in rows if row["pricing_status"] == "unpriced"]
    assert got == [
        {
            "model": "gpt-99-experimental",
            "provider": "openai",
            "calls": 1,
            "first_at": unpriced["created_at"],
            "last_at": unpriced["created_at"],
        }
    ]
    checked.add(title)

    # Savings: the hit's savedUsd (the miss's cost), the Anthropic prompt cache at its rates, and the replay at the
    # mean cost of a priced chat.sendMessage call.
    title = "Savings from cache and de-duplication"
    got = await _run_panel(title, start, end)
    [anthropic] = [row for row in rows if row["provider"] == "anthropic"]
    prompt_cache = Decimal(4_000) * (anthropic["rate_input"] - anthropic["rate_cache_read"]) / 1_000_000
    assert prompt_cache > 0
    messages = [
        row["estimated_cost_usd"]
        for row in rows
        if row["procedure"] == "chat.sendMessage" and row["pricing_status"] == "priced" and row["status"] != "cache_hit"
    ]
    assert got == [
        {
            "time": datetime.fromtimestamp(_day_of(rows[0]["created_at"]), UTC),
            "response_cache_usd": Decimal(workload.answers["miss"]["costUsd"]),
            "provider_prompt_cache_usd": prompt_cache,
            "idempotent_replays_estimated_usd": sum(messages, Decimal(0)) / len(messages),
        }
    ]
    checked.add(title)

    # Reconciliation: zero, and not zero once a total is off.
    title = "Reconciliation: conversation totals minus their usage rows (must read 0)"
    got = await _run_panel(title, start, end)
    assert got == [{"cost_difference_usd": 0, "conversations_off": 0, "rows_without_conversation": 0}]
    conversation_id = uuid.UUID(workload.answers["anthropic"]["conversationId"])
    await app_database().execute(
        "UPDATE conversations SET total_cost_usd = total_cost_usd + 0.000001 WHERE id = $1", conversation_id
    )
    got = await _run_panel(title, start, end)
    assert got == [{"cost_difference_usd": Decimal("0.000001"), "conversations_off": 1, "rows_without_conversation": 0}]
    checked.add(title)

    assert checked == panels, "every SQL panel is checked"


async def test_sql_panels_outside_the_workload_s_time_range_are_empty(
    app_server: ServedApp, sim: RunningSimulator, alice: NewUser, root: NewUser
) -> None:
    await run_workload(app_server, sim, alice, root)
    start = datetime.now(UTC) + timedelta(days=2)
    for panel in _dashboard()["panels"]:
        if panel["datasource"]["uid"] != POSTGRES_UID or panel["title"].startswith("Spend vs budget"):
            continue
        rows = await _run_panel(panel["title"], start, start + timedelta(days=1))
        assert all(not any(v for k, v in row.items() if k != "time") for row in rows), panel["title"]


# --- every PromQL panel, evaluated by a real Prometheus scraping the service ---------------------------------------

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = PROMETHEUS.with_name("promtool")
METRICS_TOKEN = "dashboard-test-token"
# What Grafana substitutes: $__rate_interval is max($__interval + scrape interval, 4 * scrape interval), at least a
# minute with the provisioned data source's 15 s; one minute covers this test's whole workload.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


@pytest.fixture
def prometheus_binary() -> Path:
    """Debian's ``prometheus`` (``.ci/run`` installs it): required with ``TOLLBOOTH_REQUIRE_PROMETHEUS=1`` (CI), skipped
    elsewhere when missing."""
    if PROMETHEUS.exists():
        return PROMETHEUS
    if os.environ.get("TOLLBOOTH_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{PROMETHEUS} is missing: CI installs Debian's prometheus package (.ci/run)")
    pytest.skip(f"{PROMETHEUS} is missing (apt-get install prometheus)")


def test_the_committed_prometheus_config_is_valid(prometheus_binary: Path) -> None:
    checked = subprocess.run(
        [str(PROMTOOL), "check", "config", str(MONITORING / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _scrape_config(target: str, token_file: Path) -> dict[str, Any]:
    """The committed ``monitoring/prometheus.yml`` pointed at ``target``, scraping every second, with its commented
    bearer-token block switched on."""
    config = _yaml(MONITORING / "prometheus.yml")
    config["global"]["scrape_interval"] = "1s"
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    job["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    return config


def _write_config(target: str, directory: Path) -> Path:
    directory.mkdir()
    token_file = directory / "metrics-token"
    token_file.write_text(METRICS_TOKEN)
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(_scrape_config(target, token_file)))
    return config_file


@contextlib.asynccontextmanager
async def running_prometheus(binary: Path, target: str, directory: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Prometheus on a free loopback port scraping ``target``, its storage in ``directory``; an HTTP client on it."""
    config_file = _write_config(target, directory)
    port = _free_port()
    log = (directory / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(binary),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await _until(lambda: _ready(client), "Prometheus is ready")
            yield client
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.close()


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/-/ready")).status_code == 200
    except httpx.TransportError:
        return False


async def _until(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.2)


async def _query(prometheus: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    response = await prometheus.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200, f"{expr}: {body}"
    assert body["status"] == "success", f"{expr}: {body}"
    assert body["data"]["resultType"] == "vector"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _value(prometheus: httpx.AsyncClient, expr: str) -> float | None:
    result = await _query(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


async def test_every_promql_panel_returns_series_from_a_real_prometheus_after_the_workload(
    prometheus_binary: Path, sim: RunningSimulator, alice: NewUser, root: NewUser, tmp_path: Path
) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), METRICS_TOKEN=METRICS_TOKEN))
    async with (
        serve_app(settings) as app,
        running_prometheus(prometheus_binary, app.url.removeprefix("http://"), tmp_path / "prometheus") as prometheus,
    ):

        async def scraped(calls: int) -> bool:
            return await _value(prometheus, "sum(tollbooth_llm_calls_total)") == calls

        await _until(lambda: _scraped_up(prometheus), "the service is scraped (with its bearer token)")
        workload = await run_workload(app, sim, alice, root)
        await _until(lambda: scraped(7), "the workload's seven calls are scraped")
        # A second round, so that every rate in the window has risen between two scrapes.
        await _second_round(app, sim, alice, workload.bob)
        await _until(lambda: scraped(11), "the second round's four calls are scraped")

        expressions = [
            (panel["title"], target["expr"])
            for panel in _dashboard()["panels"]
            if panel["datasource"]["uid"] == PROMETHEUS_UID
            for target in panel["targets"]
        ]
        assert len(expressions) >= 5
        results = {}
        for title, expr in expressions:
            result = await _query(prometheus, expand_prometheus_variables(expr, GRAFANA_VARIABLES))
            assert result, f"{title}: {expr} returned no series"
            results[expr] = result

    def by(expr_part: str, label: str) -> dict[str, float]:
        [expr] = [expr for expr in results if expr_part in expr]
        return {series["metric"].get(label, ""): float(series["value"][1]) for series in results[expr]}

    errors = by('status="error"', "provider")
    assert set(errors) == {"openai", "anthropic", "gemini"}
    assert errors["openai"] > 0
    assert errors["anthropic"] == errors["gemini"] == 0
    latency = by("histogram_quantile", "provider")
    assert set(latency) == {"openai", "anthropic", "gemini"}
    assert all(0 < seconds < 60 for seconds in latency.values()), latency
    assert set(by("tollbooth_budget_rejections_total", "scope")) == {"user"}
    assert set(by("tollbooth_idempotent_replays_total", "procedure")) == {"chat.sendMessage"}
    assert by("tollbooth_spool_records", "") == {"": 0}


async def _scraped_up(prometheus: httpx.AsyncClient) -> bool:
    return await _value(prometheus, 'up{job="tollbooth"}') == 1


async def _second_round(app: ServedApp, sim: RunningSimulator, alice: NewUser, bob: NewUser) -> None:
    """One more call per provider (an error among them), a cache hit, an idempotent replay and a budget refusal."""
    async with _http(app, alice) as http, _http(app, bob) as bobs:
        cached = {"message": "What is a token?", "model": "gpt-4o-mini", "cache": {"mode": "use"}}
        await _call(http, "chat.sendMessage", cached)
        await _call(http, "chat.sendMessage", {"message": "Again", "model": "claude-haiku-4-5"})
        await _call(http, "chat.summarizeEmail", {**EMAIL, "model": "gemini-2.5-flash"})
        once = {"message": "Charge me once", "model": "gpt-4o", "idempotencyKey": "dashboard-1"}
        await _call(http, "chat.sendMessage", once)
        sim.state.enqueue(ScriptedResponse(provider="openai", status=500))
        await _call(http, "chat.sendMessage", {"message": "Fail", "model": "gpt-4o"}, status=502)
        await _call(bobs, "chat.sendMessage", {"message": "Hi", "model": "gpt-4o"}, status=402)
