"""personas.generate: one structured text call for the set, one picture per persona, the whole set cached per user
and input, every call costed (``server/personas/service.py``; README, "Personas")."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from schemas.personas import GeneratePersonasInput, PersonaConfig
from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse
from server.simulator.script import ScriptedImageUsage, ScriptedUsage
from server.users import NewUser, create_user
from tests.conftest import TABLES, ServedApp, fetch_rows, serve_app, simulator_env
from tests.s3_server import S3Bucket
from tollbooth_client import TollboothClient

LEAD: dict[str, Any] = {"company": "Acme Robotics", "employees": 240, "signals": {"visitedPricing": True}}
EMAIL = "Lead.Person@Example.com"
# gpt-4o-mini: $0.15 input, $0.60 output per million tokens.
TEXT_USAGE = ScriptedUsage(prompt=1_000, completion=600)
TEXT_COST = Decimal("0.00051")  # 1,000 x 0.15e-6 + 600 x 0.60e-6


def personas_reply(n: int, offset: int = 0) -> str:
    """A valid answer of ``n`` distinct personas, as the model writes it."""
    return json.dumps(
        {
            "personas": [
                {
                    "name": f"Persona {i}",
                    "job_title": f"Head of Operations {i}",
                    "age": 30 + i,
                    "description": f"Runs the warehouse floor number {i}.",
                    "goals": ["Fewer stoppages", f"Goal {i}"],
                    "pain_points": ["Manual counts"],
                    "appearance": f"Short grey hair, safety vest number {i}.",
                }
                for i in range(offset + 1, offset + n + 1)
            ]
        }
    )


def text_script(n: int, usage: ScriptedUsage = TEXT_USAGE, reply: str | None = None) -> ScriptedResponse:
    return ScriptedResponse(provider="openai", reply=reply or personas_reply(n), usage=usage)


def body(n: int = 3, **fields: Any) -> dict[str, Any]:
    return {"leadData": LEAD, "config": {"numPersonas": n}, "model": "gpt-4o-mini", "withImages": False, **fields}


@pytest.fixture
async def served(sim: RunningSimulator, db: None, tmp_path: Path) -> AsyncIterator[ServedApp]:
    """The application without request de-duplication, so that a repeat reaches the persona-set cache."""
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), DEDUP_WINDOW_SECONDS="0"))
    async with serve_app(settings) as app:
        yield app


@pytest.fixture
async def http(served: ServedApp, alice: NewUser) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {alice.api_key}"}
    async with httpx.AsyncClient(base_url=f"{served.url}/trpc", headers=headers, timeout=60) as client:
        yield client


async def generate(http: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/personas.generate", json=payload)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["result"]["data"]
    return data


async def error_of(http: httpx.AsyncClient, payload: dict[str, Any]) -> tuple[str, str]:
    response = await http.post("/personas.generate", json=payload)
    error = response.json()["error"]
    return error["data"]["code"], error["message"]


async def usage_rows() -> list[dict[str, Any]]:
    return await fetch_rows(
        "SELECT call_id, procedure, status, model, estimated_cost_usd, saved_usd, cached_call_id, metadata::text "
        "AS metadata FROM ai_usage_logs ORDER BY created_at"
    )


async def test_three_personas_without_pictures_are_one_costed_text_call(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(text_script(3))
    data = await generate(http, body())

    assert [p["name"] for p in data["personas"]] == ["Persona 1", "Persona 2", "Persona 3"]
    assert [p["imageUrl"] for p in data["personas"]] == [None, None, None]
    assert len({p["personaId"] for p in data["personas"]}) == 3
    assert data["personas"][0]["painPoints"] == ["Manual counts"]
    assert (data["fromCache"], data["fromIdempotentCache"], data["imageModel"]) == (False, False, None)
    cost = data["cost"]
    [text] = cost["textCalls"]
    assert cost["imageCalls"] == []
    assert (text["purpose"], text["status"], text["costUsd"]) == ("text", "ok", str(TEXT_COST))
    assert (text["usage"]["input"], text["usage"]["output"]) == (1_000, 600)
    assert (cost["totalCostUsd"], cost["llmCalls"], cost["unpricedCalls"]) == (str(TEXT_COST), 1, 0)

    [row] = await usage_rows()
    assert (row["procedure"], row["status"], row["estimated_cost_usd"]) == ("personas.generate", "ok", TEXT_COST)
    assert str(row["call_id"]) == text["callId"]
    metadata = json.loads(row["metadata"])
    assert (metadata["task"], metadata["cache"], metadata["output_valid"]) == ("personas", "miss", True)
    sent = sim.state.requests[0].body
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["personas"]["minItems"] == 3
    assert '"company":"Acme Robotics"' in sent["messages"][-1]["content"]


async def test_a_repeat_is_answered_from_the_cache_at_no_cost_saving_what_the_set_cost(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(text_script(3))
    first = await generate(http, body())
    second = await generate(http, body())

    assert len(sim.state.requests) == 1, "the repeat made no model call"
    assert second["fromCache"] is True
    assert second["fromIdempotentCache"] is False
    assert second["personas"] == first["personas"]
    assert second["savedUsd"] == str(TEXT_COST)
    assert second["cacheAgeSeconds"] >= 0
    [hit] = second["cost"]["textCalls"]
    assert (hit["status"], hit["costUsd"], second["cost"]["totalCostUsd"]) == ("cache_hit", "0", "0")
    rows = await usage_rows()
    assert [row["status"] for row in rows] == ["ok", "cache_hit"]
    assert rows[1]["saved_usd"] == TEXT_COST
    assert rows[1]["cached_call_id"] == rows[0]["call_id"]


async def test_a_lead_data_object_in_another_key_order_is_the_same_set(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(text_script(2))
    await generate(http, body(2))
    reordered = dict(reversed(list(LEAD.items())))
    assert (await generate(http, {**body(2), "leadData": reordered}))["fromCache"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"config": {"numPersonas": 3, "writingStyle": "playful"}},
        {"config": {"numPersonas": 3, "imageStyle": "watercolour"}},
        {"model": "gpt-4o"},
        {"leadEmail": "someone.else@example.com"},
        {"leadData": {**LEAD, "employees": 241}},
    ],
)
async def test_any_change_of_input_misses_the_cache(
    http: httpx.AsyncClient, sim: RunningSimulator, change: dict[str, Any]
) -> None:
    sim.state.enqueue(text_script(3), text_script(3))
    await generate(http, body(leadEmail=EMAIL))
    second = await generate(http, {**body(leadEmail=EMAIL), **change})
    assert second["fromCache"] is False
    assert len(sim.state.requests) == 2


async def test_the_email_only_keys_the_cache_and_is_stored_nowhere(
    http: httpx.AsyncClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.state.enqueue(text_script(3))
    await generate(http, body(leadEmail=EMAIL))
    assert (await generate(http, body(leadEmail=" lead.person@example.com ")))["fromCache"] is True

    for table in TABLES:
        rows = await fetch_rows(f"SELECT t::text AS row FROM {table} t")
        for row in rows:
            assert "lead.person" not in row["row"].lower(), table
    for request in sim.state.requests:
        assert b"lead.person" not in bytes(request.raw_body).lower()
    assert "lead.person" not in caplog.text.lower()


async def test_an_invalid_answer_is_asked_again_once_and_both_are_costed(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(
        text_script(3, reply=personas_reply(2)), text_script(3, usage=ScriptedUsage(prompt=2_000, completion=600))
    )
    data = await generate(http, body())

    assert len(data["personas"]) == 3
    first, second = data["cost"]["textCalls"]
    assert (first["costUsd"], second["costUsd"]) == ("0.00051", "0.00066")
    assert data["cost"]["totalCostUsd"] == "0.00117"
    assert data["cost"]["llmCalls"] == 2
    rows = await usage_rows()
    assert [json.loads(row["metadata"])["output_valid"] for row in rows] == [False, True]
    assert sum(row["estimated_cost_usd"] for row in rows) == Decimal("0.00117")
    retry = sim.state.requests[1].body["messages"][-1]["content"]
    assert "expected exactly 3 personas, got 2" in retry

    repeat = await generate(http, body())
    assert repeat["fromCache"] is True
    assert repeat["savedUsd"] == "0.00117", "what the hit saved is every call the set cost"


async def test_two_invalid_answers_are_bad_gateway_and_nothing_is_cached(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(text_script(3, reply="not json"), text_script(3, reply=personas_reply(4)))
    assert (await error_of(http, body()))[0] == "BAD_GATEWAY"
    assert len(await usage_rows()) == 2
    assert await fetch_rows("SELECT 1 FROM response_cache") == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(0), "numPersonas"),
        (body(13), "numPersonas"),
        ({**body(), "config": {}}, "numPersonas"),
        ({**body(), "leadData": {}}, "leadData"),
        ({**body(), "leadData": {"notes": "x" * 17_000}}, "leadData"),
        ({**body(), "leadData": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, "leadData"),
        ({**body(), "leadData": ["not", "an", "object"]}, "leadData"),
        ({**body(), "colour": "red"}, "colour"),
        ({**body(), "imageModel": "gpt-4o", "withImages": True}, "not an image model"),
    ],
)
async def test_bad_input_is_bad_request_naming_the_field_and_calls_no_model(
    http: httpx.AsyncClient, sim: RunningSimulator, payload: dict[str, Any], field: str
) -> None:
    code, message = await error_of(http, payload)
    assert code == "BAD_REQUEST"
    assert field in message
    assert sim.state.requests == []
    assert await usage_rows() == []


async def test_the_python_client_generates_personas(served: ServedApp, alice: NewUser, sim: RunningSimulator) -> None:
    sim.state.enqueue(text_script(2))
    async with TollboothClient(served.url, api_key=alice.api_key, batching=False) as client:
        data = await client.personas.generate(
            GeneratePersonasInput(
                lead_data=LEAD, config=PersonaConfig(num_personas=2), model="gpt-4o-mini", with_images=False
            )
        )
    assert [p.name for p in data.personas] == ["Persona 1", "Persona 2"]
    assert data.cost.total_cost_usd == TEXT_COST
    assert data.personas[0].image_url is None


# --- with pictures ------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# gpt-image-1.5: $5 text input, $10 text output, $32 image output per million tokens.
IMAGE_USAGES = (
    ScriptedImageUsage(text_input=100, image_output=272),  # 0.0005 + 0.008704
    ScriptedImageUsage(text_input=100, image_output=1_056),  # 0.0005 + 0.033792
    ScriptedImageUsage(text_input=100, text_output=20, image_output=4_160),  # 0.0005 + 0.0002 + 0.13312
)
IMAGE_COSTS = sorted([Decimal("0.009204"), Decimal("0.034292"), Decimal("0.13382")])
SET_COST = TEXT_COST + sum(IMAGE_COSTS)  # 0.177826


def image_script(usage: ScriptedImageUsage | None = None, status: int | None = None) -> ScriptedResponse:
    return ScriptedResponse(provider="openai", api="images", image_usage=usage, status=status)


def with_pictures(n: int = 3, **fields: Any) -> dict[str, Any]:
    return {**body(n), "withImages": True, "imageModel": "gpt-image-1.5", **fields}


@asynccontextmanager
async def app_with(sim: RunningSimulator, tmp_path: Path, **env: str) -> AsyncIterator[ServedApp]:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), DEDUP_WINDOW_SECONDS="0", **env))
    async with serve_app(settings) as app:
        yield app


def user_http(app: ServedApp, user: NewUser) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {user.api_key}"}
    return httpx.AsyncClient(base_url=f"{app.url}/trpc", headers=headers, timeout=60)


async def test_three_personas_with_pictures_end_to_end_through_s3(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    sim.state.enqueue(text_script(3), *(image_script(usage) for usage in IMAGE_USAGES))
    async with app_with(sim, tmp_path, **s3_bucket.env) as app, user_http(app, alice) as http:
        data = await generate(http, with_pictures())

        keys = s3_bucket.keys()
        assert len(keys) == 3, "one object per picture: the prompts differ, so do the pictures"
        urls = [persona["imageUrl"] for persona in data["personas"]]
        async with httpx.AsyncClient(timeout=30) as downloads:
            for url in urls:
                [key] = [key for key in keys if urlsplit(url).path.endswith(f"/{key}")]
                assert s3_bucket.head(key)["ContentType"] == "image/png"
                got = await downloads.get(url)
                assert got.status_code == 200
                assert got.content.startswith(PNG_SIGNATURE)
                assert got.content == s3_bucket.get(key)

        cost = data["cost"]
        assert sorted(Decimal(call["costUsd"]) for call in cost["imageCalls"]) == IMAGE_COSTS
        assert {call["personaId"] for call in cost["imageCalls"]} == {p["personaId"] for p in data["personas"]}
        assert [call["purpose"] for call in cost["imageCalls"]] == ["image"] * 3
        assert Decimal(cost["totalCostUsd"]) == SET_COST
        assert (cost["llmCalls"], data["imageModel"]) == (4, "gpt-image-1.5")
        rows = await usage_rows()
        assert len(rows) == 4
        assert sorted(row["estimated_cost_usd"] for row in rows) == sorted([TEXT_COST, *IMAGE_COSTS])
        assert {row["procedure"] for row in rows} == {"personas.generate"}
        reported = {call["callId"]: Decimal(call["costUsd"]) for call in [*cost["textCalls"], *cost["imageCalls"]]}
        assert reported == {str(row["call_id"]): row["estimated_cost_usd"] for row in rows}
        tasks = sorted(json.loads(row["metadata"])["task"] for row in rows)
        assert tasks == ["persona_image"] * 3 + ["personas"]

        requests = len(sim.state.requests)
        repeat = await generate(http, with_pictures())
        assert len(sim.state.requests) == requests, "no model call"
        assert s3_bucket.keys() == keys, "no new object"
        assert repeat["fromCache"] is True
        assert repeat["cost"]["totalCostUsd"] == "0"
        assert repeat["cost"]["imageCalls"] == []
        assert Decimal(repeat["savedUsd"]) == SET_COST
        assert [urlsplit(p["imageUrl"]).path for p in repeat["personas"]] == [urlsplit(u).path for u in urls]
        assert [{**p, "imageUrl": None} for p in repeat["personas"]] == [
            {**p, "imageUrl": None} for p in data["personas"]
        ]
        rows = await usage_rows()
        assert [row["status"] for row in rows[4:]] == ["cache_hit"]
        assert rows[4]["estimated_cost_usd"] == 0
        assert rows[4]["saved_usd"] == SET_COST


async def test_pictures_in_the_local_media_folder_are_served_by_the_app(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path
) -> None:
    sim.state.enqueue(text_script(2))
    async with app_with(sim, tmp_path) as app, user_http(app, alice) as http:
        data = await generate(http, with_pictures(2))
        files = sorted(path.name for path in (tmp_path / "media").iterdir())
        assert len(files) == 2
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as downloads:
            for persona in data["personas"]:
                got = await downloads.get(persona["imageUrl"])
                assert got.status_code == 200
                assert got.headers["content-type"] == "image/png"
                name = persona["imageUrl"].rsplit("/", 1)[1]
                assert got.content == (tmp_path / "media" / name).read_bytes()
        again = await generate(http, with_pictures(2))
        assert again["fromCache"] is True
        assert [p["imageUrl"] for p in again["personas"]] == [p["imageUrl"] for p in data["personas"]]


async def test_a_failed_picture_leaves_its_persona_without_one_and_the_set_uncached(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path
) -> None:
    sim.state.enqueue(text_script(3), image_script(IMAGE_USAGES[0]), image_script(status=500), image_script())
    async with app_with(sim, tmp_path, PERSONA_IMAGE_CONCURRENCY="1") as app, user_http(app, alice) as http:
        data = await generate(http, with_pictures())

        assert [p["imageUrl"] is None for p in data["personas"]] == [False, True, False]
        failed = data["cost"]["imageCalls"][1]
        assert (failed["status"], failed["costUsd"], failed["personaId"]) == (
            "error",
            "0",
            data["personas"][1]["personaId"],
        )
        assert failed["errorType"] is not None
        rows = await usage_rows()
        assert sorted(row["status"] for row in rows) == ["error", "ok", "ok", "ok"]
        assert str(next(row["call_id"] for row in rows if row["status"] == "error")) == failed["callId"]
        assert await fetch_rows("SELECT 1 FROM response_cache") == []

        sim.state.enqueue(text_script(3))
        again = await generate(http, with_pictures())
        assert again["fromCache"] is False, "an incomplete set is never served from the cache"
        assert all(p["imageUrl"] is not None for p in again["personas"])


async def test_a_storage_failure_fails_the_call_after_recording_every_picture_caches_nothing_and_stores_once(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    missing = {**s3_bucket.env, "S3_BUCKET": f"{s3_bucket.name}-missing"}
    sim.state.enqueue(text_script(3))
    async with app_with(sim, tmp_path, **missing) as app, user_http(app, alice) as http:
        code, message = await error_of(http, with_pictures())
        assert code == "INTERNAL_SERVER_ERROR"
        assert f"{s3_bucket.name}-missing" in message
        rows = await usage_rows()
        assert sorted(row["status"] for row in rows) == ["ok"] * 4, "the text call and the pictures are paid for"
        assert all(row["estimated_cost_usd"] > 0 for row in rows)
        assert await fetch_rows("SELECT 1 FROM response_cache") == []

        storage = s3_bucket.server.client()
        storage.create_bucket(Bucket=missing["S3_BUCKET"])
        sim.state.enqueue(text_script(3), text_script(3))
        first = await generate(http, with_pictures())
        again = await generate(http, with_pictures(cache={"mode": "bypass"}))
        stored = storage.list_objects_v2(Bucket=missing["S3_BUCKET"])["Contents"]
        assert len(stored) == 3, "the same pictures made again are stored once"
        assert [urlsplit(p["imageUrl"]).path for p in again["personas"]] == [
            urlsplit(p["imageUrl"]).path for p in first["personas"]
        ]


async def test_generating_without_pictures_and_with_them_are_two_sets(
    http: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    sim.state.enqueue(text_script(2), text_script(2))
    await generate(http, body(2))
    with_images = await generate(http, with_pictures(2))
    assert with_images["fromCache"] is False
    assert all(p["imageUrl"] for p in with_images["personas"])


async def test_concurrent_identical_sets_make_one_text_call(http: httpx.AsyncClient, sim: RunningSimulator) -> None:
    sim.state.enqueue(text_script(3))
    answers = await asyncio.gather(*(generate(http, body()) for _ in range(5)))
    assert len(sim.state.requests) == 1
    assert sorted(answer["fromCache"] for answer in answers) == [False, True, True, True, True]
    assert len({json.dumps(answer["personas"]) for answer in answers}) == 1


async def test_cache_stats_count_a_set_as_one_lookup(
    http: httpx.AsyncClient, sim: RunningSimulator, served: ServedApp
) -> None:
    sim.state.enqueue(text_script(3, reply=personas_reply(1)), text_script(3))
    await generate(http, body())  # a miss that took two text calls
    await generate(http, body())
    await generate(http, body())
    root = await create_user("root", is_admin=True)
    async with user_http(served, root) as admin:
        stats = (await admin.get("/admin.cacheStats", params={"input": '{"procedure":"personas.generate"}'})).json()
    figures = stats["result"]["data"]["combined"]
    assert (figures["hits"], figures["misses"], figures["hitRatio"]) == (2, 1, 2 / 3)
    assert Decimal(figures["savedUsd"]) == 2 * 2 * TEXT_COST, "each hit saved both text calls"
    assert stats["result"]["data"]["entries"] == 1


async def test_a_replayed_answer_never_hands_out_presigned_urls_past_half_their_life(
    sim: RunningSimulator, alice: NewUser, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    """Presigned URLs valid 4 s: the stored answer of a key is replayed for 2 s; a repeat after that is answered from
    the persona cache with URLs signed anew (no model call, no new object), never with the first answer's URLs."""
    sim.state.enqueue(text_script(3), *(image_script(usage) for usage in IMAGE_USAGES))
    async with (
        app_with(sim, tmp_path, S3_URL_TTL_SECONDS="4", **s3_bucket.env) as app,
        user_http(app, alice) as http,
    ):
        payload = with_pictures(idempotencyKey="pictures-1")
        first = await generate(http, payload)
        replay = await generate(http, payload)
        assert replay["fromIdempotentCache"] is True
        assert [p["imageUrl"] for p in replay["personas"]] == [p["imageUrl"] for p in first["personas"]]

        await asyncio.sleep(2.5)
        requests, keys = len(sim.state.requests), s3_bucket.keys()
        later = await generate(http, payload)

        assert later["fromIdempotentCache"] is False
        assert later["fromCache"] is True
        assert len(sim.state.requests) == requests, "no model call"
        assert s3_bucket.keys() == keys, "no new object"
        firsts, laters = [p["imageUrl"] for p in first["personas"]], [p["imageUrl"] for p in later["personas"]]
        assert [urlsplit(url).path for url in laters] == [urlsplit(url).path for url in firsts]
        assert all(a != b for a, b in zip(firsts, laters, strict=True)), "signed anew"
