"""Alert delivery against a real HTTP receiver on loopback (signature, exactly-once claims, retries with backoff,
giving up), the deliverer in the running app, spike detection from recorded usage, and the alert settings."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from schemas import codec
from schemas.budgets import BudgetAlert
from schemas.chat import SendMessageInput
from server.budgets.alerts import AlertDeliverer, RetryPolicy, Webhook
from server.settings import Settings, SettingsError
from server.users import NewUser
from tests.conftest import MakeServices, app_database, fetch_rows, serve_app
from tests.usage_records import new_user, record_call, tokens

SECRET = "whsec-test-0123456789abcdef"
CALL_USD = Decimal("0.0045")  # gpt-4o, 1,000 input and 200 output tokens: 1000 x 2.5 + 200 x 10 per million


@dataclass
class Receiver:
    """A webhook endpoint: it answers 500 to the first ``failures`` requests, then 200, after ``delay_seconds``."""

    url: str = ""
    failures: int = 0
    delay_seconds: float = 0.0
    requests: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)

    @property
    def alert_ids(self) -> list[uuid.UUID]:
        return [codec.decoder(BudgetAlert).decode(body).alert_id for _, body, _ in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def alerts(request: web.Request) -> web.Response:
        state.requests.append((dict(request.headers), await request.read(), time.time()))
        await asyncio.sleep(state.delay_seconds)
        if state.failures > 0:
            state.failures -= 1
            return web.Response(status=500, text="the receiver is down")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/hooks/alerts"
    yield state
    await runner.cleanup()


def verified(headers: dict[str, str], body: bytes, received_at: float, secret: str = SECRET) -> bool:
    """What a receiver does (README, "Budgets and alerts"): the signature over ``<timestamp>.<body>``, and a recent
    timestamp."""
    timestamp = headers["X-Tollbooth-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", headers["X-Tollbooth-Signature"]) and (
        abs(received_at - int(timestamp)) <= 300
    )


def _deliverer(url: str, retry: RetryPolicy | None = None, spike_factor: str = "3") -> AlertDeliverer:
    return AlertDeliverer(
        app_database(),
        webhook=Webhook(url, SECRET, timeout_seconds=5),
        spike_factor=Decimal(spike_factor),
        retry=retry,
    )


async def _alert(threshold: str = "0.8", budget_id: uuid.UUID | None = None) -> uuid.UUID:
    alert_id = uuid.uuid4()
    await app_database().execute(
        "INSERT INTO budget_alerts (id, kind, budget_id, scope, subject_id, period, period_start, threshold, limit_usd,"
        " spent_usd) VALUES ($1, 'threshold', $2, 'global', NULL, 'day', date_trunc('day', now()), $3, 10, 8.5)",
        alert_id,
        budget_id or uuid.uuid4(),
        Decimal(threshold),
    )
    return alert_id


async def _delivery(alert_id: uuid.UUID) -> dict[str, Any]:
    [row] = await fetch_rows(
        "SELECT delivered_at, attempts, last_error, isfinite(next_attempt_at) AS retrying,"
        " CASE WHEN isfinite(next_attempt_at) THEN extract(epoch FROM next_attempt_at - now())::float END"
        " AS due_in_seconds"
        " FROM budget_alerts WHERE id = $1",
        alert_id,
    )
    return row


async def test_a_threshold_alert_is_posted_signed_and_recorded_as_delivered(
    make_services: MakeServices, alice: NewUser, receiver: Receiver
) -> None:
    """The alert of a real call that crossed a soft budget's threshold, as settlement wrote it."""
    budget_id = uuid.uuid4()
    await app_database().execute(
        "INSERT INTO budgets (id, scope, period, limit_usd, hard, alert_thresholds)"
        " VALUES ($1, 'global', 'day', 0.000001, false, '{1}')",
        budget_id,
    )
    sent = await make_services().chat.send_message(alice.id, SendMessageInput(message="Over budget?", model="gpt-4o"))
    deliverer = _deliverer(receiver.url)
    try:
        assert await deliverer.deliver_due() == 1
        assert await deliverer.deliver_due() == 0  # delivered: never posted again
    finally:
        await deliverer.aclose()

    [(headers, body, received_at)] = receiver.requests
    assert verified(headers, body, received_at)
    assert not verified(headers, body, received_at, secret="another secret")
    assert not verified(headers, body.replace(b"0.000001", b"1000"), received_at)  # any change breaks it
    assert headers["Content-Type"] == "application/json"
    alert = codec.decoder(BudgetAlert).decode(body)
    assert headers["X-Tollbooth-Alert-Id"] == str(alert.alert_id)
    assert (alert.kind, alert.budget_id, alert.scope, alert.period, alert.threshold) == (
        "threshold",
        budget_id,
        "global",
        "day",
        1.0,
    )
    assert (alert.limit_usd, alert.spent_usd, alert.baseline_usd) == (Decimal("0.000001"), sent.cost_usd, None)
    assert alert.summary.startswith("the global daily budget of USD 0.000001: 100 % reached")
    assert msgspec.json.decode(body)["limitUsd"] == "0.000001"  # money as everywhere on the wire
    delivery = await _delivery(alert.alert_id)
    assert delivery["delivered_at"] is not None
    assert (delivery["attempts"], delivery["last_error"]) == (1, None)


async def test_two_deliverers_at_once_post_each_alert_exactly_once(db: None, receiver: Receiver) -> None:
    alert_ids = {await _alert() for _ in range(30)}
    receiver.delay_seconds = 0.01  # so that the two overlap
    first, second = _deliverer(receiver.url), _deliverer(receiver.url)
    try:
        counts = await asyncio.gather(first.deliver_due(), second.deliver_due())
    finally:
        await first.aclose()
        await second.aclose()
    assert sorted(receiver.alert_ids) == sorted(alert_ids)  # each once: no duplicate, none missing
    assert sum(counts) == 30
    assert min(counts) > 0  # both took part
    rows = await fetch_rows("SELECT attempts, delivered_at FROM budget_alerts")
    assert {row["attempts"] for row in rows} == {1}
    assert all(row["delivered_at"] is not None for row in rows)


async def test_a_failed_delivery_is_retried_with_exponential_backoff_until_the_receiver_answers(
    db: None, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tollbooth.alerts")
    alert_id = await _alert()
    receiver.failures = 2
    deliverer = _deliverer(receiver.url, RetryPolicy(first_delay_seconds=0.4, max_delay_seconds=60, max_attempts=5))
    try:
        for attempt, delay in [(1, 0.4), (2, 0.8)]:
            assert await deliverer.deliver_due() == 0
            delivery = await _delivery(alert_id)
            assert (delivery["attempts"], delivery["last_error"]) == (attempt, "HTTP 500 Internal Server Error")
            assert delivery["delivered_at"] is None
            assert delay - 0.2 < delivery["due_in_seconds"] <= delay
            assert await deliverer.deliver_due() == 0  # not due yet: nothing is posted
            assert len(receiver.requests) == attempt
            await asyncio.sleep(delivery["due_in_seconds"] + 0.05)
        assert await deliverer.deliver_due() == 1
    finally:
        await deliverer.aclose()
    delivery = await _delivery(alert_id)
    assert delivery["delivered_at"] is not None
    assert (delivery["attempts"], delivery["last_error"]) == (3, "HTTP 500 Internal Server Error")  # the last failure
    assert receiver.alert_ids == [alert_id] * 3
    assert all(verified(headers, body, at) for headers, body, at in receiver.requests)
    first, second, third = receiver.requests
    assert second[2] - first[2] >= 0.4
    assert third[2] - second[2] >= 0.8
    messages = [record.getMessage() for record in caplog.records if str(alert_id) in record.getMessage()]
    assert [m.split(" (")[0] for m in messages] == [
        f"alert {alert_id} delivery to 127.0.0.1 failed",
        f"alert {alert_id} delivery to 127.0.0.1 failed",
        f"alert {alert_id} delivered to 127.0.0.1",
    ]
    assert "next attempt in 0.4 s" in messages[0]
    assert "next attempt in 0.8 s" in messages[1]


async def test_an_alert_is_given_up_after_the_last_attempt_without_leaking_the_url_or_the_secret(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tollbooth.alerts")
    alert_id = await _alert()
    url = "http://127.0.0.1:1/hooks/T0KEN-IN-THE-PATH"  # nothing listens on port 1
    deliverer = _deliverer(url, RetryPolicy(first_delay_seconds=0.01, max_delay_seconds=0.02, max_attempts=3))
    try:
        for _ in range(20):
            await deliverer.deliver_due()
            if (await _delivery(alert_id))["attempts"] == 3:
                break
            await asyncio.sleep(0.03)
        await asyncio.sleep(0.05)
        assert await deliverer.deliver_due() == 0
    finally:
        await deliverer.aclose()
    delivery = await _delivery(alert_id)
    assert (delivery["attempts"], delivery["retrying"], delivery["delivered_at"]) == (3, False, None)
    assert delivery["last_error"].startswith("ConnectError")
    logged = caplog.text + delivery["last_error"]
    assert "T0KEN" not in logged
    assert SECRET not in logged
    [gave_up] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert gave_up.getMessage().startswith(f"alert {alert_id} not delivered to 127.0.0.1 after 3 attempts, giving up")


async def test_the_running_app_delivers_alerts_to_the_configured_webhook(
    db: None, receiver: Receiver, tmp_path: Path
) -> None:
    alert_id = await _alert()
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path), "ALERT_WEBHOOK_URL": receiver.url, "ALERT_WEBHOOK_SECRET": SECRET}
    )
    async with serve_app(settings):
        for _ in range(200):
            if receiver.requests:
                break
            await asyncio.sleep(0.02)
    assert receiver.alert_ids == [alert_id]
    assert verified(*receiver.requests[0])
    assert (await _delivery(alert_id))["delivered_at"] is not None


# --- spikes -------------------------------------------------------------------------------------------------------

NOW = datetime.datetime(2026, 3, 10, 12, 30, tzinfo=datetime.UTC)
LAST_HOUR = datetime.datetime(2026, 3, 10, 11, 0, tzinfo=datetime.UTC)


async def _spend(user_id: uuid.UUID, at: datetime.datetime, calls: int = 1) -> None:
    """``calls`` x CALL_USD, as one call."""
    await record_call(
        at=at, user_id=user_id, conversation_id=None, model="gpt-4o", usage=tokens(1_000 * calls, output=200 * calls)
    )


async def test_an_hour_above_the_factor_times_the_weekly_hourly_average_alerts_once(db: None) -> None:
    user = await new_user()
    for day in range(1, 8):  # 24 x CALL_USD a day for the 7 days before the last hour: CALL_USD an hour
        await _spend(user, LAST_HOUR - datetime.timedelta(days=day) + datetime.timedelta(minutes=20), calls=24)
    await _spend(user, LAST_HOUR - datetime.timedelta(days=8), calls=1000)  # before the window: not counted
    await _spend(user, LAST_HOUR + datetime.timedelta(minutes=10), calls=3)
    await _spend(user, NOW, calls=100)  # the current hour is not over: not counted
    deliverer = AlertDeliverer(app_database(), webhook=None, spike_factor=Decimal(3))
    assert await deliverer.check_spike(NOW) is None  # 3 x the average is not above it

    await _spend(user, LAST_HOUR + datetime.timedelta(minutes=59), calls=1)
    spike = await deliverer.check_spike(NOW)
    assert spike is not None
    assert (spike.kind, spike.budget_id, spike.threshold, spike.period_start) == ("spike", None, None, LAST_HOUR)
    assert (spike.spent_usd, spike.baseline_usd) == (4 * CALL_USD, CALL_USD)
    assert spike.summary == (
        "spend spike: USD 0.018 in the hour from 2026-03-10 11:00 UTC, 4.0 times the trailing average of "
        "USD 0.0045 an hour"
    )
    assert await deliverer.check_spike(NOW) is None  # once per hour
    assert await deliverer.check_spike(NOW + datetime.timedelta(minutes=20)) is None
    assert len(await fetch_rows("SELECT 1 FROM budget_alerts WHERE kind = 'spike'")) == 1
    await deliverer.aclose()


async def test_a_young_history_is_averaged_over_the_hours_it_has(db: None) -> None:
    user = await new_user()
    deliverer = AlertDeliverer(app_database(), webhook=None, spike_factor=Decimal(3))
    await _spend(user, LAST_HOUR)
    assert await deliverer.check_spike(NOW) is None  # no history before the hour: no average to compare with
    await _spend(user, LAST_HOUR - datetime.timedelta(hours=10) + datetime.timedelta(minutes=40), calls=10)
    await _spend(user, LAST_HOUR, calls=2)  # 3 x CALL_USD in the hour, 10 x over 10 hours: not a spike
    assert await deliverer.check_spike(NOW) is None
    await _spend(user, LAST_HOUR, calls=1)
    spike = await deliverer.check_spike(NOW)
    assert spike is not None
    assert (spike.spent_usd, spike.baseline_usd) == (4 * CALL_USD, CALL_USD)
    off = AlertDeliverer(app_database(), webhook=None, spike_factor=Decimal(0))
    assert await off.check_spike(NOW + datetime.timedelta(hours=1)) is None
    await deliverer.aclose()
    await off.aclose()


# --- settings -----------------------------------------------------------------------------------------------------


def test_the_webhook_needs_its_secret_and_neither_is_shown() -> None:
    with pytest.raises(SettingsError, match=r"^ALERT_WEBHOOK_SECRET must be set when ALERT_WEBHOOK_URL is"):
        Settings.from_env({"ALERT_WEBHOOK_URL": "https://hooks.example.com/T0KEN"})
    with pytest.raises(SettingsError, match=r"^ALERT_WEBHOOK_URL must be an http") as raised:
        Settings.from_env({"ALERT_WEBHOOK_URL": "hooks.example.com/T0KEN", "ALERT_WEBHOOK_SECRET": SECRET})
    assert "T0KEN" not in str(raised.value)
    with pytest.raises(SettingsError, match=r"^ALERT_SPIKE_FACTOR must be"):
        Settings.from_env({"ALERT_SPIKE_FACTOR": "three"})
    settings = Settings.from_env(
        {"ALERT_WEBHOOK_URL": "https://hooks.example.com/T0KEN", "ALERT_WEBHOOK_SECRET": SECRET}
    )
    assert (settings.alert_webhook_url, settings.alert_webhook_secret, settings.alert_spike_factor) == (
        "https://hooks.example.com/T0KEN",
        SECRET,
        3.0,
    )
    assert "T0KEN" not in repr(settings)
    assert SECRET not in repr(settings)
    assert Settings.from_env({"ALERT_SPIKE_FACTOR": "0"}).alert_spike_factor == 0
