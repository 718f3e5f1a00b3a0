"""TypeScript users: the generated ``AppRouter`` types, and the real ``@trpc/client`` against the real server.

- the committed ``clients/ts/src/app-router.d.ts`` is what ``python -m server typescript`` writes today;
- the generator's mapping of wire types to TypeScript, on small registries;
- ``npm ci`` (skipped when ``node_modules`` already matches the lock file), ``tsc --strict`` over the interop program
  and the lines that must not compile, then the compiled program run with node against the app served by this
  test: httpLink, httpBatchLink, httpBatchStreamLink, httpSubscriptionLink, successes and error codes.

Without node or npm the interop test is skipped, unless ``TOLLBOOTH_REQUIRE_NODE=1`` (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest

from schemas.base import WireInput, WireOutput
from schemas.registry import Access, Registry, mutation, query, subscription
from schemas.router import APP_REGISTRY
from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.typescript import DEFAULT_OUTPUT, TypeScriptError, render_app_router
from server.users import create_user
from tests.conftest import ROOT, ServedApp, fetch_rows

CLIENT_DIR = ROOT / "clients" / "ts"
INSTALL_STAMP = CLIENT_DIR / "node_modules" / ".tollbooth-install-stamp"
REQUIRE_NODE = os.environ.get("TOLLBOOTH_REQUIRE_NODE") == "1"
PACKAGE = json.loads((CLIENT_DIR / "package.json").read_text(encoding="utf-8"))


# --- the committed types ------------------------------------------------------------------------------------------


def test_committed_app_router_types_are_up_to_date() -> None:
    committed = DEFAULT_OUTPUT.read_text(encoding="utf-8") if DEFAULT_OUTPUT.exists() else ""
    assert committed == render_app_router(APP_REGISTRY), (
        f"{DEFAULT_OUTPUT.relative_to(ROOT)} is stale: run `python -m server typescript` and commit it"
    )


def test_the_check_command_fails_on_a_stale_file(tmp_path: Path) -> None:
    out = tmp_path / "app-router.d.ts"
    command = [sys.executable, "-m", "server", "typescript", "--out", str(out)]
    assert subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, timeout=60).returncode == 1
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
    assert out.read_text(encoding="utf-8") == render_app_router(APP_REGISTRY)
    assert subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, timeout=60).returncode == 0
    out.write_text(out.read_text(encoding="utf-8").replace("cacheRead", "cache_read"), encoding="utf-8")
    stale = subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1
    assert "python -m server typescript" in stale.stderr


# --- the generator on small registries ------------------------------------------------------------------------------


# In ProbeInput and as an output: a Struct on both sides is a WireInput (requests stay strict).
class Limits(WireInput, frozen=True, kw_only=True):
    max_tokens: int = 100
    stop: list[str] | None = None


class Cat(WireOutput, frozen=True, kw_only=True, tag="cat", tag_field="kind"):
    lives: int


class Dog(WireOutput, frozen=True, kw_only=True, tag="dog", tag_field="kind"):
    good: bool


class Sparse(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, frozen=True):
    always: str
    sometimes_null: str | None = None


class ProbeInput(WireInput, frozen=True, kw_only=True):
    limits: Limits
    amount_usd: Decimal
    ids: list[uuid.UUID] = msgspec.field(default_factory=list)
    mode: Literal["fast", "slow"] = "fast"
    pair: tuple[int, str] | None = None
    scores: dict[str, float] = msgspec.field(default_factory=dict)
    notes: list[str | None] = msgspec.field(default_factory=list)
    last_event_id: Annotated[str, msgspec.Meta(description="resume after */ this")] | None = None


class ProbeOutput(WireOutput, frozen=True, kw_only=True):
    limits: Limits
    pet: Cat | Dog
    sparse: Sparse
    anything: Any
    total_usd: Decimal | None


PROBE_REGISTRY = Registry(
    (
        mutation("probe.run", ProbeInput, ProbeOutput, Access.USER, "Runs."),
        query("probe.peek", None, ProbeOutput, Access.PUBLIC, "Peeks."),
        subscription("probe.watch", ProbeInput, Limits, Access.USER, "Watches, resumably."),
        subscription("other.ticks", None, Cat, Access.USER, "Ticks, not resumable."),
        query("probe.deeper.leaf", None, Cat, Access.PUBLIC, "A router inside a router."),
    )
)


def _declaration(text: str, name: str) -> str:
    start = text.index(f"export type {name} = {{\n")
    return text[start : text.index("\n};", start) + 3]


def test_generated_types_follow_the_wire() -> None:
    text = render_app_router(PROBE_REGISTRY)

    # A Struct sent and received: received, every field is present; sent, the defaulted ones may be left out.
    assert "export type Limits = {\n  maxTokens: number;\n  stop: string[] | null;\n};" in text
    assert "export type LimitsInput = {" in text
    assert "  maxTokens?: number;\n" in _declaration(text, "LimitsInput")
    assert "  limits: LimitsInput;\n" in _declaration(text, "ProbeInput")
    assert "  limits: Limits;\n" in _declaration(text, "ProbeOutput")

    probe_input = _declaration(text, "ProbeInput")
    for line in (
        "  amountUsd: string;",
        "  ids?: string[];",
        '  mode?: "fast" | "slow";',
        "  pair?: [number, string] | null;",
        "  scores?: Record<string, number>;",
        "  notes?: (string | null)[];",
        "  lastEventId?: string | null;",
    ):
        assert line in probe_input, line
    assert "resume after *\\/ this" in probe_input  # a comment cannot be closed by a description

    probe_output = _declaration(text, "ProbeOutput")
    assert "  pet: Cat | Dog;" in probe_output
    assert "  anything: unknown;" in probe_output
    assert "  totalUsd: string | null;" in probe_output
    assert '  kind: "cat";' in _declaration(text, "Cat")
    # omit_defaults: the server leaves a field out when it holds its default.
    assert "  sometimesNull?: string | null;" in _declaration(text, "Sparse")

    assert "run: TRPCMutationProcedure<{ input: ProbeInput; output: ProbeOutput; meta: object }>;" in text
    assert "peek: TRPCQueryProcedure<{ input: void; output: ProbeOutput; meta: object }>;" in text
    assert "output: AsyncIterable<Tracked<Limits>, void, any>" in text
    assert (
        "ticks: TRPCSubscriptionProcedure<{ input: void; output: AsyncIterable<Cat, void, any>; meta: object }>;"
        in (text)
    )
    assert "    probe: {\n      deeper: {\n" in text
    assert "        leaf: TRPCQueryProcedure<{ input: void; output: Cat; meta: object }>;\n      };\n" in text
    # Namespaces and declarations come out sorted, so the file only changes when the contract does.
    assert text.index("    other: {") < text.index("    probe: {")
    assert render_app_router(PROBE_REGISTRY) == text


def test_a_name_clash_is_reported() -> None:
    class LimitsInput(WireInput, frozen=True, kw_only=True):
        limits: Limits

    registry = Registry((mutation("probe.clash", LimitsInput, Limits, Access.USER, "Clashes."),))
    with pytest.raises(TypeScriptError, match="LimitsInput"):
        render_app_router(registry)


# --- @trpc/client against the server ------------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"`{name}` is not installed: the TypeScript interoperability test needs node and npm"
        if REQUIRE_NODE:
            pytest.fail(message + " (TOLLBOOTH_REQUIRE_NODE=1)")
        pytest.skip(message)
    return found


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Test runs sharing this checkout install and compile one at a time."""
    digest = hashlib.sha256(str(CLIENT_DIR).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"tollbooth-ts-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(command, cwd=CLIENT_DIR, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def installed_node_modules() -> Iterator[str]:
    """node, with ``clients/ts/node_modules`` as the lock file says (``npm ci`` when it changed since the last
    install), held for the block: test runs sharing this checkout install and compile one at a time."""
    npm = _tool("npm")
    node = _tool("node")
    with _install_lock():
        lock = (CLIENT_DIR / "package-lock.json").read_bytes()
        stamp = hashlib.sha256(lock + (CLIENT_DIR / "package.json").read_bytes()).hexdigest()
        if not INSTALL_STAMP.exists() or INSTALL_STAMP.read_text(encoding="utf-8") != stamp:
            _run([npm, "ci", "--no-audit", "--no-fund"], "npm ci", timeout=600)
            INSTALL_STAMP.write_text(stamp, encoding="utf-8")
        yield node


@pytest.fixture(scope="session")
def interop_program() -> Path:
    """``npm ci`` when the lock file changed since the last install, then ``tsc --strict``: the compiled program."""
    with installed_node_modules() as node:
        # One tsc run type-checks everything (the @ts-expect-error lines of src/type-errors.ts included: an unused
        # one is an error) and, with noEmitOnError, emits dist/ only when all of it passes.
        shutil.rmtree(CLIENT_DIR / "dist", ignore_errors=True)
        tsc = str(CLIENT_DIR / "node_modules" / "typescript" / "bin" / "tsc")
        _run([node, tsc, "--strict", "-p", "tsconfig.json"], "tsc --strict", timeout=300)
    program = CLIENT_DIR / "dist" / "interop.js"
    assert program.exists()
    return program


async def test_trpc_client_calls_the_server_through_every_link(
    interop_program: Path, app_server: ServedApp, sim: RunningSimulator
) -> None:
    ada = await create_user("Ada Lovelace")
    grace = await create_user("Grace Hopper")
    root = await create_user("Root", is_admin=True)
    # The program's first two messages: OpenAI with a cache read, then Anthropic with a cache write.
    sim.state.enqueue(
        ScriptedResponse(
            provider="openai", reply="Hello!", usage=ScriptedUsage(prompt=1000, cached=400, completion=20)
        ),
        ScriptedResponse(
            provider="anthropic",
            reply="Brief.",
            usage=ScriptedUsage(input=900, cache_read=100, cache_write_5m=200, output=50),
        ),
        # The chat.streamMessage that a proxy cuts: long enough to be still streaming when the cut comes.
        ScriptedResponse(provider="gemini", reply="word " * 5000),
    )
    process = await asyncio.create_subprocess_exec(
        shutil.which("node") or "node",
        str(interop_program),
        *("--url", app_server.url, "--key", ada.api_key, "--name", ada.name, "--other-key", grace.api_key),
        *("--admin-key", root.api_key),
        cwd=CLIENT_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON report (exit {process.returncode}):\n{stdout.decode()}\n{stderr.decode()}")

    failures = [check for check in report["checks"] if not check["ok"]]
    assert not failures, json.dumps(failures, indent=2) + "\n" + stderr.decode()
    assert process.returncode == 0, stderr.decode()
    assert report["ok"] is True
    assert report["versions"]["@trpc/client"] == PACKAGE["dependencies"]["@trpc/client"]

    checks = {check["name"]: check for check in report["checks"]}
    for link in ("httpLink", "httpBatchLink", "httpBatchStreamLink", "httpSubscriptionLink"):
        assert sum(name.startswith(f"{link}:") for name in checks) >= 2, link
    assert len(checks) >= 18

    # What the TypeScript client received is exactly what the database holds, to the last digit.
    conversation = next(c for n, c in checks.items() if n.startswith("httpLink: chat.sendMessage twice"))["detail"]
    first_cost, second_cost = (Decimal(cost) for cost in conversation["costs"])
    assert first_cost == Decimal("0.000132")  # gpt-4o-mini: 600 input, 400 cache read, 20 output
    assert second_cost == Decimal("0.00141")  # claude-haiku-4-5: 900 input, 100 cache read, 200 5m write, 50 out
    assert Decimal(conversation["totalCostUsd"]) == first_cost + second_cost
    usage = conversation["usage"]
    assert (usage["input"], usage["cacheRead"], usage["cacheWrite5m"], usage["output"]) == (900, 100, 200, 50)
    rows = await fetch_rows(
        "SELECT estimated_cost_usd FROM ai_usage_logs WHERE conversation_id = $1 ORDER BY created_at",
        uuid.UUID(conversation["conversationId"]),
    )
    assert [row["estimated_cost_usd"] for row in rows][:2] == [first_cost, second_cost]

    # Rejected calls (bad input, no key, someone else's conversation) never reached a provider.
    statuses = await fetch_rows(
        "SELECT status, count(*) AS calls FROM ai_usage_logs WHERE provider <> 'gemini' GROUP BY status"
    )
    assert [row["status"] for row in statuses] == ["ok"]
    assert sim.state.pending("openai") == sim.state.pending("anthropic") == sim.state.pending("gemini") == 0
    # The two streams a proxy cut (after two deltas; after `done`): each EventSource reconnected to the same URL, and
    # neither message was sent to the provider, nor billed, a second time.
    sent = [request.body["messages"][-1]["content"] for request in sim.state.requests_to("gemini")]
    assert sent == ["A long answer, please", "Cut me after done"]
    # Two batches with the same idempotency keys: the provider saw each call once.
    sent = [request.body["messages"][-1]["content"] for request in sim.state.requests_to("openai")]
    assert sent.count("idempotent hello") == 1
    rows = await fetch_rows("SELECT status FROM ai_usage_logs WHERE provider = 'gemini'")
    assert sorted(row["status"] for row in rows) == ["cancelled", "ok"]

    subscription = checks["httpSubscriptionLink: system.clock, tracked events, then return"]["detail"]
    assert subscription["ids"] == ["1", "2", "3"]
