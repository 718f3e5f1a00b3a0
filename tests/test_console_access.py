"""Who may use the admin console, over real HTTP against the served application: only an admin key opens a session;
the session cookie is signed, expires and ends at sign-out; no form is accepted from another site."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.console.sessions import COOKIE_NAME
from server.settings import Settings, SettingsError
from server.simulator import RunningSimulator
from server.users import NewUser, create_user, revoke_key
from tests.conftest import ServedApp, app_database, fetch_rows, serve_app, simulator_env

SECRET = "a console secret of at least thirty-two characters"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def console(sim: RunningSimulator, db: None, tmp_path: Path) -> AsyncIterator[ServedApp]:
    env = simulator_env(sim, DATA_DIR=str(tmp_path), CONSOLE_SECRET=SECRET)
    async with serve_app(Settings.from_env(env)) as served:
        yield served


@pytest.fixture
async def root(db: None) -> NewUser:
    return await create_user("root", is_admin=True)


@pytest.fixture
async def browser(console: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client as a browser on the console's own pages would be: same-origin requests."""
    async with httpx.AsyncClient(base_url=console.url, headers={"Sec-Fetch-Site": "same-origin"}) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    return await client.post("/console/sign-in", data={"api_key": api_key, "next": "/console/"})


async def csrf_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/console/budgets")
    assert page.status_code == 200
    found = CSRF.search(page.text)
    assert found is not None
    return found[1]


def _signed(session_id: str, expires: int, secret: str = SECRET) -> str:
    signature = hmac.new(secret.encode(), f"session.{session_id}.{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{session_id}.{expires}.{signature}"


def _is_sign_in_redirect(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/console/sign-in")


async def test_console_pages_without_a_session_redirect_to_sign_in_and_posts_are_unauthorized(
    browser: httpx.AsyncClient,
) -> None:
    for path in ("/console", "/console/models", "/console/budgets", "/console/models?export=models"):
        response = await browser.get(path)
        assert _is_sign_in_redirect(response), path
    assert "next=%2Fconsole%2Fmodels" in (await browser.get("/console/models")).headers["location"]
    refused = await browser.post("/console/budgets", data={"scope": "global", "period": "day", "limit_usd": "1"})
    assert refused.status_code == 401
    assert await fetch_rows("SELECT id FROM budgets") == []
    form = await browser.get("/console/sign-in")
    assert form.status_code == 200
    assert 'name="api_key"' in form.text


async def test_a_user_key_or_an_unknown_key_opens_no_session(
    browser: httpx.AsyncClient, alice: NewUser, root: NewUser
) -> None:
    for key in (alice.api_key, "tb_" + "x" * 43, "not a key", root.api_key + "x"):
        response = await sign_in(browser, key)
        assert response.status_code == 401, key
        assert "set-cookie" not in response.headers
        assert "not an admin API key" in response.text
    assert await fetch_rows("SELECT id FROM console_sessions") == []
    assert _is_sign_in_redirect(await browser.get("/console"))


async def test_an_admin_key_opens_a_signed_http_only_strict_session_cookie(
    browser: httpx.AsyncClient, root: NewUser
) -> None:
    response = await sign_in(browser, root.api_key)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/console" in cookie.lower()
    assert "max-age=28800" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP here; over TLS it is Secure (below)
    assert root.api_key not in cookie
    page = await browser.get("/console")
    assert page.status_code == 200
    assert "root" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    [session] = await fetch_rows("SELECT user_id, api_key_hash FROM console_sessions")
    assert session["user_id"] == root.id


async def test_the_cookie_is_secure_when_the_request_came_over_tls(browser: httpx.AsyncClient, root: NewUser) -> None:
    # uvicorn takes X-Forwarded-Proto from a proxy it trusts (FORWARDED_ALLOW_IPS, by default 127.0.0.1).
    response = await browser.post(
        "/console/sign-in", data={"api_key": root.api_key}, headers={"X-Forwarded-Proto": "https"}
    )
    assert response.status_code == 303
    assert "secure" in {part.strip().lower() for part in response.headers["set-cookie"].split(";")}


async def test_a_forged_or_altered_cookie_is_refused(browser: httpx.AsyncClient, root: NewUser) -> None:
    await sign_in(browser, root.api_key)
    real = browser.cookies[COOKIE_NAME]
    session_id, expires, signature = real.split(".")
    forged = [
        _signed(session_id, int(expires), secret="another secret of at least thirty-two chars"),
        f"{session_id}.{int(expires) + 3600}.{signature}",  # a longer life, same signature
        f"{session_id[:-1]}{'B' if session_id.endswith('A') else 'A'}.{expires}.{signature}",  # another session id
        _signed("made-up-session-id", int(expires)),  # signed with the real secret, but no such session
        f"{session_id}.{expires}",
        "",
    ]
    for cookie in forged:
        browser.cookies.clear()
        browser.cookies.set(COOKIE_NAME, cookie, domain="127.0.0.1", path="/console")
        response = await browser.get("/console")
        assert _is_sign_in_redirect(response), cookie
    browser.cookies.clear()
    browser.cookies.set(COOKIE_NAME, real, domain="127.0.0.1", path="/console")
    assert (await browser.get("/console")).status_code == 200


async def test_an_expired_cookie_or_session_is_refused(browser: httpx.AsyncClient, root: NewUser) -> None:
    await sign_in(browser, root.api_key)
    real = browser.cookies[COOKIE_NAME]
    session_id = real.split(".")[0]
    browser.cookies.clear()
    # Well signed, but its expiry has passed.
    browser.cookies.set(COOKIE_NAME, _signed(session_id, int(time.time()) - 1), domain="127.0.0.1", path="/console")
    assert _is_sign_in_redirect(await browser.get("/console"))
    # The cookie is current, but the session's row has expired.
    browser.cookies.clear()
    browser.cookies.set(COOKIE_NAME, real, domain="127.0.0.1", path="/console")
    assert (await browser.get("/console")).status_code == 200
    await app_database().execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    assert _is_sign_in_redirect(await browser.get("/console"))


async def test_a_session_expires_after_its_ttl(sim: RunningSimulator, db: None, tmp_path: Path) -> None:
    root = await create_user("root", is_admin=True)
    env = simulator_env(sim, DATA_DIR=str(tmp_path), CONSOLE_SESSION_TTL_SECONDS="1")
    async with serve_app(Settings.from_env(env)) as served, httpx.AsyncClient(base_url=served.url) as client:
        response = await sign_in(client, root.api_key)
        assert "max-age=1" in response.headers["set-cookie"].lower()
        assert (await client.get("/console/alerts")).status_code == 200
        await asyncio.sleep(2.1)  # the cookie's expiry is in whole seconds
        assert _is_sign_in_redirect(await client.get("/console/alerts"))


async def test_a_cross_site_form_post_is_refused(browser: httpx.AsyncClient, root: NewUser) -> None:
    await sign_in(browser, root.api_key)
    token = await csrf_token(browser)
    budget = {"scope": "global", "period": "day", "limit_usd": "5", "hard": "on", "alert_thresholds": "0.5"}
    refused = [
        ({**budget}, {}),  # no token
        ({**budget, "csrf_token": "0" * 64}, {}),  # a wrong token
        ({**budget, "csrf_token": token}, {"Origin": "https://attacker.example"}),
        ({**budget, "csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}),
        ({**budget, "csrf_token": token}, {"Sec-Fetch-Site": "same-site"}),
    ]
    for form, headers in refused:
        response = await browser.post("/console/budgets", data=form, headers=headers)
        assert response.status_code == 403, (form, headers)
        assert await fetch_rows("SELECT id FROM budgets") == []
    # A token is bound to its session: another admin session's token does not pass.
    async with httpx.AsyncClient(base_url=str(browser.base_url), headers={"Sec-Fetch-Site": "same-origin"}) as other:
        await sign_in(other, root.api_key)
        other_token = await csrf_token(other)
    assert other_token != token
    response = await browser.post("/console/budgets", data={**budget, "csrf_token": other_token})
    assert response.status_code == 403
    # The console's own form passes.
    origin = str(browser.base_url).rstrip("/")
    created = await browser.post("/console/budgets", data={**budget, "csrf_token": token}, headers={"Origin": origin})
    assert created.status_code == 303
    [row] = await fetch_rows("SELECT id, limit_usd FROM budgets")
    deleted = await browser.post(f"/console/budgets/{row['id']}/delete", data={"csrf_token": "nope"})
    assert deleted.status_code == 403
    assert len(await fetch_rows("SELECT id FROM budgets")) == 1


async def test_a_cross_site_sign_in_post_is_refused(browser: httpx.AsyncClient, root: NewUser) -> None:
    response = await browser.post(
        "/console/sign-in", data={"api_key": root.api_key}, headers={"Origin": "https://attacker.example"}
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_sign_out_ends_the_session_and_its_cookie(browser: httpx.AsyncClient, root: NewUser) -> None:
    await sign_in(browser, root.api_key)
    cookie = browser.cookies[COOKIE_NAME]
    token = await csrf_token(browser)
    assert (await browser.post("/console/sign-out", data={"csrf_token": "wrong"})).status_code == 403
    assert (await browser.get("/console")).status_code == 200
    response = await browser.post("/console/sign-out", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in"
    cleared = response.headers["set-cookie"].lower()
    assert cleared.startswith(f"{COOKIE_NAME}=")
    assert "max-age=0" in cleared or "expires=" in cleared
    assert await fetch_rows("SELECT id FROM console_sessions") == []
    browser.cookies.clear()
    browser.cookies.set(COOKIE_NAME, cookie, domain="127.0.0.1", path="/console")  # a copy kept from before
    assert _is_sign_in_redirect(await browser.get("/console"))


async def test_revoking_the_admin_key_ends_its_sessions(browser: httpx.AsyncClient, root: NewUser) -> None:
    await sign_in(browser, root.api_key)
    assert (await browser.get("/console/alerts")).status_code == 200
    await revoke_key(str(root.id))
    assert _is_sign_in_redirect(await browser.get("/console/alerts"))


def test_a_short_console_secret_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError, match="CONSOLE_SECRET must be at least 32 characters"):
        Settings.from_env({"CONSOLE_SECRET": "too short"})
    with pytest.raises(SettingsError, match="CONSOLE_SESSION_TTL_SECONDS"):
        Settings.from_env({"CONSOLE_SESSION_TTL_SECONDS": "0"})
    settings = Settings.from_env({"CONSOLE_SECRET": SECRET})
    assert SECRET not in repr(settings)
    assert settings.console_session_ttl_seconds == 28_800
