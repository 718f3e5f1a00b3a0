"""Delivering alerts to ``ALERT_WEBHOOK_URL``, and noticing spend spikes.

Alerts are rows of ``budget_alerts``: settlement writes the threshold ones (``server.llm.recorder``), ``check_spike``
the spike ones. ``AlertDeliverer.deliver_due`` posts each undelivered alert whose time has come as JSON (a
``schemas.budgets.BudgetAlert``) and records the outcome. Any number of processes may run it: an alert is claimed by
moving its ``next_attempt_at`` past the request's timeout in one statement (``FOR UPDATE SKIP LOCKED``), so no two
deliverers post it at once, and no transaction stays open during the request. A process that dies mid-request leaves
the claim to expire and the alert is posted again: delivery is at least once, and the receiver de-duplicates by
``alertId``.

The signature: ``X-Tollbooth-Timestamp`` is the Unix time of the request in whole seconds, and
``X-Tollbooth-Signature`` is ``sha256=`` followed by the lowercase hex HMAC-SHA256, keyed by ``ALERT_WEBHOOK_SECRET``
(its UTF-8 bytes), of the timestamp's ASCII digits, one ``.`` and the raw body bytes. A receiver recomputes it over the
body exactly as received, compares in constant time, and refuses a timestamp more than a few minutes from its clock (a
replayed request carries its old timestamp, and changing it breaks the signature).

A non-2xx answer or a failed request is retried after 1 s, 2 s, 4 s... (``RetryPolicy``), up to ``max_attempts``;
then the alert is given up (logged as an error, ``next_attempt_at`` set to infinity) and stays listed as undelivered.
``last_error`` says why the last attempt failed (a status, or the error's type and message with the URL and secret
removed).

A spike is the last full UTC hour's spend (all calls, from ``ai_usage_rollup``) above ``ALERT_SPIKE_FACTOR`` times
the average hourly spend of the 7 days before it (averaged over the hours of recorded history when there is less than
7 days of it, so that a new deployment's first week does not alert every hour), when that average is above 0. It is
alerted once per hour (the unique index ``budget_alerts_once``), whichever process notices it first.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import httpx

from schemas import codec
from schemas.budgets import BudgetAlert
from server.budgets.service import alert_from_row, log_new_alert
from server.database import Database
from server.errors import DatabaseUnavailableError
from server.settings import Settings

__all__ = (
    "ALERT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AlertDeliverer",
    "RetryPolicy",
    "Webhook",
    "signature",
)

logger: Final = logging.getLogger("tollbooth.alerts")

SIGNATURE_HEADER: Final = "X-Tollbooth-Signature"
TIMESTAMP_HEADER: Final = "X-Tollbooth-Timestamp"
ALERT_ID_HEADER: Final = "X-Tollbooth-Alert-Id"
POLL_INTERVAL_SECONDS: Final = 5.0
SPIKE_CHECK_INTERVAL_SECONDS: Final = 60.0
CLAIM_MARGIN_SECONDS: Final = 30.0
"""How long past the request's timeout a claimed alert stays invisible to other deliverers."""
DELIVERIES_PER_PASS: Final = 100
SPIKE_WINDOW: Final = datetime.timedelta(days=7)
_HOUR: Final = datetime.timedelta(hours=1)
_MAX_ERROR_LENGTH: Final = 500

_CLAIM: Final = """
UPDATE budget_alerts a SET next_attempt_at = now() + make_interval(secs => $2)
FROM (
    SELECT id FROM budget_alerts
    WHERE delivered_at IS NULL AND next_attempt_at <= now() AND attempts < $1
    ORDER BY next_attempt_at, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
) due
WHERE a.id = due.id
RETURNING a.*
"""
_DELIVERED: Final = "UPDATE budget_alerts SET delivered_at = now(), attempts = attempts + 1 WHERE id = $1"
_FAILED: Final = """
UPDATE budget_alerts SET
    attempts = attempts + 1,
    last_error = $2,
    next_attempt_at = CASE WHEN $3 THEN 'infinity'::timestamptz ELSE now() + make_interval(secs => $4) END
WHERE id = $1
"""
_SPEND: Final = """
SELECT coalesce(sum(cost_usd) FILTER (WHERE period_start >= $1), 0) AS spent_usd,
       coalesce(sum(cost_usd) FILTER (WHERE period_start < $1), 0) AS trailing_usd,
       (SELECT min(period_start) FROM ai_usage_rollup) AS first_period_start
FROM ai_usage_rollup
WHERE period_start >= $2 AND period_start < $3
"""
_SPIKE: Final = """
INSERT INTO budget_alerts (id, kind, period_start, spent_usd, baseline_usd)
VALUES (gen_random_uuid(), 'spike', $1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING *
"""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Tollbooth-Signature`` of ``body`` sent at ``timestamp``: ``sha256=`` and the hex HMAC of
    ``<timestamp>.<body>``."""
    digest = hmac.new(secret.encode(), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempt ``n`` that fails is retried ``first_delay_seconds * 2 ** (n - 1)`` later (at most
    ``max_delay_seconds``); after ``max_attempts`` failures the alert is given up. The defaults try for about 3
    hours."""

    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 3600.0
    max_attempts: int = 15

    def delay_seconds(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt."""
        return float(min(self.first_delay_seconds * 2 ** min(attempts - 1, 60), self.max_delay_seconds))


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where alerts go. Both the URL (it may carry a token, as chat webhooks do) and the secret stay out of logs."""

    url: str = field(repr=False)
    secret: str = field(repr=False)
    timeout_seconds: float = 10.0

    @property
    def host(self) -> str:
        """The URL's host, for logs."""
        return httpx.URL(self.url).host

    def scrub(self, text: str) -> str:
        """``text`` without the URL or the secret (an error message may quote the URL)."""
        return text.replace(self.url, f"<{self.host}>").replace(self.secret, "<secret>")


class AlertDeliverer:
    """Posts due alerts to ``webhook`` (none: alerts are only kept) and writes spike alerts (``spike_factor`` 0: none).

    ``transport`` replaces the network (tests).
    """

    def __init__(
        self,
        db: Database,
        *,
        webhook: Webhook | None,
        spike_factor: Decimal,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.webhook = webhook
        self.spike_factor = spike_factor
        self.retry = retry or RetryPolicy()
        timeout = webhook.timeout_seconds if webhook is not None else 10.0
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
        self._encoder = codec.encoder()

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> AlertDeliverer:
        webhook = None
        if settings.alert_webhook_url is not None:
            assert settings.alert_webhook_secret is not None  # Settings requires it with the URL
            webhook = Webhook(settings.alert_webhook_url, settings.alert_webhook_secret)
            logger.info("alerts: posted to %s (ALERT_WEBHOOK_URL), signed", webhook.host)
        else:
            logger.info("alerts: ALERT_WEBHOOK_URL is not set; alerts are kept for admin.listAlerts only")
        return cls(db, webhook=webhook, spike_factor=Decimal(repr(settings.alert_spike_factor)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def deliver_due(self, limit: int = DELIVERIES_PER_PASS) -> int:
        """Post the alerts that are due, one claim at a time, at most ``limit``; returns how many were delivered."""
        if self.webhook is None:
            return 0
        delivered = 0
        for _ in range(limit):
            row = await self.db.fetchrow(
                _CLAIM, self.retry.max_attempts, self.webhook.timeout_seconds + CLAIM_MARGIN_SECONDS
            )
            if row is None:
                break
            delivered += await self._deliver(self.webhook, alert_from_row(row), row["attempts"] + 1)
        return delivered

    async def _deliver(self, webhook: Webhook, alert: BudgetAlert, attempt: int) -> int:
        body = self._encoder.encode(alert)
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(webhook.secret, timestamp, body),
            ALERT_ID_HEADER: str(alert.alert_id),
        }
        try:
            response = await self._http.post(webhook.url, content=body, headers=headers)
        except Exception as error:  # any failure of the request is a failed attempt, retried
            reason = webhook.scrub(f"{type(error).__name__}: {error}".rstrip(": "))
        else:
            if response.is_success:
                await self.db.execute(_DELIVERED, alert.alert_id)
                logger.info(
                    "alert %s delivered to %s (attempt %d, HTTP %d): %s",
                    alert.alert_id,
                    webhook.host,
                    attempt,
                    response.status_code,
                    alert.summary,
                )
                return 1
            reason = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        reason = reason[:_MAX_ERROR_LENGTH]
        give_up = attempt >= self.retry.max_attempts
        delay = self.retry.delay_seconds(attempt)
        await self.db.execute(_FAILED, alert.alert_id, reason, give_up, delay)
        if give_up:
            logger.error(
                "alert %s not delivered to %s after %d attempts, giving up: %s",
                alert.alert_id,
                webhook.host,
                attempt,
                reason,
            )
        else:
            logger.warning(
                "alert %s delivery to %s failed (attempt %d of %d): %s; next attempt in %g s",
                alert.alert_id,
                webhook.host,
                attempt,
                self.retry.max_attempts,
                reason,
                delay,
            )
        return 0

    async def check_spike(self, now: datetime.datetime | None = None) -> BudgetAlert | None:
        """Alert the last full hour before ``now`` if it was a spike and not yet alerted; returns the new alert."""
        if self.spike_factor <= 0:
            return None
        now = datetime.datetime.now(datetime.UTC) if now is None else now.astimezone(datetime.UTC)
        hour = now.replace(minute=0, second=0, microsecond=0) - _HOUR
        window_start = hour - SPIKE_WINDOW
        row = await self.db.fetchrow(_SPEND, hour, window_start, hour + _HOUR)
        assert row is not None  # an aggregate without GROUP BY returns one row
        first: datetime.datetime | None = row["first_period_start"]
        if first is None:
            return None
        history_start = max(window_start, first.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0))
        hours = (hour - history_start) // _HOUR
        if hours < 1:
            return None
        spent: Decimal = row["spent_usd"]
        baseline = row["trailing_usd"] / hours
        if baseline <= 0 or spent <= self.spike_factor * baseline:
            return None
        created = await self.db.fetchrow(_SPIKE, hour, spent, baseline)
        if created is None:
            return None  # alerted already, by this process or another
        alert = alert_from_row(created)
        log_new_alert(alert)
        return alert

    async def run_forever(
        self,
        *,
        poll_interval_seconds: float = POLL_INTERVAL_SECONDS,
        spike_interval_seconds: float = SPIKE_CHECK_INTERVAL_SECONDS,
    ) -> None:
        """Check for a spike every ``spike_interval_seconds`` and deliver what is due every ``poll_interval_seconds``;
        a failed pass is logged and tried again at the next one."""
        loop = asyncio.get_running_loop()
        next_spike_check = loop.time()
        while True:
            if loop.time() >= next_spike_check:
                next_spike_check = loop.time() + spike_interval_seconds
                await _logged(self.check_spike, "spike check")
            await _logged(self.deliver_due, "alert delivery")
            await asyncio.sleep(poll_interval_seconds)


async def _logged(step: Callable[[], Awaitable[object]], name: str) -> None:
    try:
        await step()
    except DatabaseUnavailableError:
        pass  # logged once by the database; the next pass retries
    except Exception:
        logger.exception("%s failed; will retry", name)
