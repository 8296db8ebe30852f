"""Alert webhooks: Slack-compatible JSON, retried with backoff, never blocking the stream.

:meth:`WebhookNotifier.notify` only puts the alert on a bounded queue; a
background task posts it to every URL. A failed post is retried with
exponential backoff (``attempts`` times); when the queue is full the oldest
alert is dropped and counted, so a dead endpoint can never hold the stream up.

The body is what a Slack incoming webhook takes (``text`` plus ``blocks``),
with the whole alert under ``thumbline`` for other receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import orjson

from thumbline.metrics import Metrics
from thumbline.schemas import Alert

logger = logging.getLogger(__name__)


def slack_body(alert: Alert) -> dict[str, Any]:
    """The alert as a Slack message, with the full record under ``thumbline``."""
    dims = ", ".join(
        f"{name}={value}"
        for name, value in (
            ("project", alert.project), ("environment", alert.environment),
            ("model", alert.model), ("capability", alert.capability),
        )
        if value and value != "*"
    )  # fmt: skip
    icon = ":rotating_light:" if alert.state == "firing" else ":white_check_mark:"
    text = (
        f"{icon} thumbline {alert.rule} {alert.state}: bad rate {alert.bad_rate:.0%} "
        f"({alert.bad}/{alert.total}) against {alert.baseline_rate:.0%} baseline, {dims}, "
        f"{alert.window_start:%H:%M}-{alert.window_end:%H:%M} UTC"
    )
    lines = [text]
    for comment in alert.sample_comments[:3]:
        lines.append(f"> {comment[:200]}")
    lines.append(f"`{alert.inbox_command}`")
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}],
        "thumbline": orjson.loads(alert.to_json()),
    }


class WebhookNotifier:
    """Posts alerts to URLs in the background; ``start()``/``stop()`` in a running loop."""

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        metrics: Metrics | None = None,
        attempts: int = 5,
        first_backoff: float = 0.5,
        timeout: float = 10.0,
        queue_size: int = 1000,
    ) -> None:
        self.urls = urls
        self.metrics = metrics
        self.attempts = attempts
        self.first_backoff = first_backoff
        self.timeout = timeout
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self.urls and self._task is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._task = asyncio.create_task(self._run(), name="thumbline-webhooks")

    def notify(self, alert: Alert) -> None:
        """Queue an alert for every URL; never waits."""
        if not self.urls:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._count("dropped")
            logger.warning("alert webhook queue full: dropped the oldest alert")
        self._queue.put_nowait(alert)

    async def drain(self, seconds: float = 5.0) -> None:
        """Wait (at most ``seconds``) until the queued alerts are posted or given up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), seconds)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                body = orjson.dumps(slack_body(alert))
                await asyncio.gather(*(self._post(url, body) for url in self.urls))
            finally:
                self._queue.task_done()

    async def _post(self, url: str, body: bytes) -> None:
        assert self._session is not None  # noqa: S101 (set by start)
        delay = self.first_backoff
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status < 300:
                        self._count("delivered")
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt < self.attempts:
                self._count("retried")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        self._count("failed")
        # The URL may hold a token (Slack's do): name only its host.
        logger.warning(
            "alert webhook to %s failed %d times (%s)", _host(url), self.attempts, problem
        )

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhooks.labels(outcome).inc()


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]
