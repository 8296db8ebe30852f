"""GatewayProducer: the SDK over HTTP, for services that cannot reach Kafka.

Same API as :class:`~thumbline.producers.kafka.FeedbackProducer` (``send``,
``send_nowait``, ``send_many``, ``thumb_down``, ``trace``...): events are
validated first (an invalid one raises InvalidEvent and is never sent),
batched per endpoint, and posted to the gateway. A future resolves when the
gateway answered 202 for its item, which means Kafka acknowledged it. A 503 or
429 is retried after its ``Retry-After`` (same event ids, so no second row),
up to ``retries`` times; then the futures fail with DeliveryFailed
(``retriable``). An item the gateway rejects fails with InvalidEvent.

The Delivery of an HTTP send has no Kafka position: ``topic`` is the endpoint,
``partition`` and ``offset`` are -1, ``index`` is the event's place in its
request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from thumbline.producers.api import Delivery, Event, EventHelpers, spawn
from thumbline.producers.errors import DeliveryFailed, InvalidEvent, ProducerClosed
from thumbline.schemas import FeedbackEvent

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    path: str
    events: list[Event] = field(default_factory=list)
    futures: list[asyncio.Future[Delivery]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class GatewayProducer(EventHelpers):
    """Publishes through the HTTP gateway; use ``async with GatewayProducer(url=...)``.

    Args:
        url: the gateway, e.g. ``http://127.0.0.1:8788``.
        api_key: an ``ingest`` key (``thumbline keys create``); none while the
            gateway runs without keys on loopback.
        linger_ms: how long a batch waits for more events before it is posted.
        max_batch_events: events per request (at most 1,000).
        retries: how often a 503, a 429 or a connection error is retried.
        timeout: seconds per request.
        project: the project of every event the helpers build without one; a
            key bound to a project sets it on the server (another is refused).
    """

    def __init__(
        self,
        *,
        url: str,
        api_key: str | None = None,
        project: str | None = None,
        linger_ms: float = 5.0,
        max_batch_events: int = 500,
        retries: int = 5,
        timeout: float = 30.0,
    ) -> None:
        if not 1 <= max_batch_events <= 1000:
            raise ValueError("max_batch_events must be 1..1000")
        self.project = project
        self._url = url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._linger = linger_ms / 1000.0
        self._max_events = max_batch_events
        self._retries = retries
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[str, _Pending] = {}
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def stop(self) -> None:
        """Post what is buffered, wait for the answers, and close. Safe to call twice."""
        if self._session is None:
            return
        try:
            await self.flush()
        finally:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> GatewayProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def send_nowait(self, event: Event) -> asyncio.Future[Delivery]:
        """Queue a validated event; the future resolves when the gateway accepted it."""
        if self._session is None:
            raise ProducerClosed("the producer is not started (call start() or use async with)")
        path = "/v1/feedback" if isinstance(event, FeedbackEvent) else "/v1/traces"
        batch = self._pending.get(path)
        if batch is None:
            batch = self._pending[path] = _Pending(path)
            batch.timer = asyncio.get_running_loop().call_later(self._linger, self._post, path)
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        batch.events.append(event)
        batch.futures.append(future)
        if len(batch.events) >= self._max_events:
            self._post(path)
        return future

    async def send(self, event: Event) -> Delivery:
        return await self.send_nowait(event)

    async def send_many(self, events: Iterable[Event]) -> list[Delivery]:
        """Send many events; returns once the gateway accepted all of them."""
        futures = [self.send_nowait(e) for e in events]
        return list(await asyncio.gather(*futures))

    async def flush(self) -> None:
        for path in list(self._pending):
            self._post(path)
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    def _post(self, path: str) -> None:
        batch = self._pending.pop(path, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        spawn(self._inflight, self._deliver(batch))

    async def _deliver(self, batch: _Pending) -> None:
        body = (
            b"["
            + b",".join(
                type(e).__pydantic_serializer__.to_json(e, exclude_none=True) for e in batch.events
            )
            + b"]"
        )
        try:
            status, answer = await self._request(batch.path, body)
        except DeliveryFailed as exc:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: the caller hears of it through the future
            return
        results = answer.get("results", []) if isinstance(answer, dict) else []
        for index, (event, future) in enumerate(zip(batch.events, batch.futures, strict=True)):
            if future.done():
                continue
            result = results[index] if index < len(results) else {}
            if status in (202, 207) and result.get("status") == "accepted":
                future.set_result(Delivery(
                    event_id=getattr(event, "event_id", event.span_id),
                    trace_id=event.trace_id or "",
                    topic=batch.path, partition=-1, offset=-1, index=index,
                ))  # fmt: skip
            else:
                reason = result.get("error") or (answer or {}).get("error") or f"HTTP {status}"
                future.set_exception(
                    InvalidEvent(type(event).__name__, [("(event)", None, reason)])
                )
                future.exception()

    async def _request(self, path: str, body: bytes) -> tuple[int, Any]:
        assert self._session is not None  # noqa: S101 (checked by send_nowait)
        last = ""
        for attempt in range(self._retries + 1):
            wait = min(2.0**attempt * 0.2, 10.0)
            try:
                async with self._session.post(
                    self._url + path, data=body, headers=self._headers
                ) as response:
                    answer = orjson.loads(await response.read() or b"{}")
                    if response.status in (429, 503):
                        last = f"HTTP {response.status}: {answer.get('error')}"
                        wait = float(response.headers.get("Retry-After", wait))
                    elif response.status in (401, 403, 413):
                        raise DeliveryFailed(
                            f"the gateway refused the request: HTTP {response.status}: "
                            f"{answer.get('error')}", retriable=False,
                        )  # fmt: skip
                    else:
                        return response.status, answer
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                last = repr(exc)
            if attempt < self._retries:
                logger.info("gateway: %s; retrying in %.1f s", last, wait)
                await asyncio.sleep(wait)
        raise DeliveryFailed(
            f"the gateway did not accept the events after {self._retries + 1} attempts: {last}",
            retriable=True,
        )
