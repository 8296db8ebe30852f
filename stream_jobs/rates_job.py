"""The rates and alerts job: enriched feedback in, rate windows and spike alerts out.

Per micro-batch of ``feedback.enriched`` messages it counts the rows
(:class:`~thumbline.stream_jobs.bad_feedback_rates.RateState`) and reads the join's
**watermark markers** from the same topic: per partition, a JSON object
``{"watermark": ms, "durable": offset}`` saying that the join's input up to
that time is stored (or caught up), and that its rows on this partition up to
that offset are in ClickHouse. The watermark is the lowest over the topic's
partitions: a partition the join has not reported yet holds every window back.
On each tick windows the watermark has passed complete, in order: their rows go
to ``rates`` and ``feedback_rates`` and the spike rules
(:class:`~thumbline.stream_jobs.spike_alerts.SpikeDetector`) judge them, once; state
changes go to ``alerts`` (topic and table), the webhooks and the metrics.
Windows a late row changed, and windows due for reconciliation, are
recomputed from ``feedback FINAL`` (:mod:`thumbline.stream_jobs.rates_store`) and
written again.

Delivery: a message is acknowledged, in offset order per partition, once what
it changed is safe without it: at once for rows counted in open windows (a
restart rebuilds those from the ``feedback`` table, and the join replays what
it had not stored), and for a late row only after its window was recomputed
(no restart would know to recompute it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from thumbline.kafka import Outgoing, deliver
from thumbline.metrics import Metrics
from thumbline.outages import STORE, Waits
from thumbline.schemas import Alert, RateWindow, Topics
from thumbline.stream_jobs.bad_feedback_rates import ALL, Ended, RateState
from thumbline.stream_jobs.rates_store import (
    alert_rows,
    latest_alerts,
    read_windows,
    recompute_span,
    restore_rates,
    unpublished_alerts,
)
from thumbline.stream_jobs.sink import ClickHouseSink, SinkUnavailable, StoreClient
from thumbline.stream_jobs.spike_alerts import SpikeDetector
from thumbline.stream_jobs.webhooks import WebhookNotifier

logger = logging.getLogger(__name__)

#: Windows to recompute are read from the store at most this often (one query each time).
RECOMPUTE_EVERY = 5.0


@dataclass(slots=True, eq=False)
class _Held:
    """An input message and the windows it made dirty (it is acknowledged when none is left)."""

    event: Any
    dirty: set[float] = field(default_factory=set)


class RatesJob:
    """Counts, windows and alerts of one worker; the Faust agent and timer call into it.

    Args:
        store: a client that reads the store (windows to recompute); without one,
            late rows are counted in ``late`` and their windows wait.
        database: where the tables are.
    """

    def __init__(
        self,
        *,
        topics: Topics,
        rates: RateState,
        detector: SpikeDetector,
        sink: ClickHouseSink,
        producer: AIOKafkaProducer,
        store: StoreClient | None = None,
        database: str = "thumbline",
        notifier: WebhookNotifier | None = None,
        metrics: Metrics | None = None,
        waits: Waits | None = None,
    ) -> None:
        self.topics = topics
        self.waits = waits or Waits(metrics)
        self.rates = rates
        self.detector = detector
        self.sink = sink
        self.producer = producer
        self.store = store
        self.database = database
        self.notifier = notifier
        self.metrics = metrics
        self.partitions = topics.enriched.partitions
        #: enriched partition -> (watermark in seconds, durable offset), from the join's markers
        self.marks: dict[int, tuple[float, int]] = {}
        self._order: dict[Any, deque[_Held]] = defaultdict(deque)
        self._lock = asyncio.Lock()
        self._reported: dict[str, int] = {}
        self._judged_at = 0.0
        self._recomputed_at = 0.0
        self.recomputes = 0
        self.alerts: deque[Alert] = deque(maxlen=1000)  # the latest state changes it emitted

    @property
    def watermark(self) -> float | None:
        """The lowest watermark over the partitions; None until each has reported."""
        if len(self.marks) < self.partitions:
            return None
        return min(w for w, _ in self.marks.values())

    async def handle(self, events: Sequence[Any]) -> None:
        """Count one micro-batch of enriched messages (row arrays and watermark markers)."""
        async with self._lock:
            counted = 0
            for event in events:
                message = event.message
                message.incref()  # acknowledged in order by _release, not after the batch
                held = _Held(event)
                self._order[message.tp].append(held)
                try:
                    value = orjson.loads(message.value)
                except orjson.JSONDecodeError:
                    logger.warning("skipped an enriched message that is not JSON")
                    continue
                if isinstance(value, dict) and "watermark" in value:
                    self._mark(message.partition, value)
                    continue
                rows = value if isinstance(value, list) else [value]
                counted += len(rows)
                held.dirty = self.rates.apply(
                    rows, partition=message.partition, offset=message.offset
                )
            self._release()
            if self.metrics is not None:
                self.metrics.events_consumed.labels(self.topics.enriched.name).inc(counted)

    def _mark(self, partition: int, marker: dict[str, Any]) -> None:
        watermark, durable = float(marker["watermark"]) / 1000, int(marker.get("durable", -1))
        previous = self.marks.get(partition, (watermark, durable))
        self.marks[partition] = (max(previous[0], watermark), max(previous[1], durable))

    def _release(self) -> None:
        for queue in self._order.values():
            while queue and not queue[0].dirty:
                queue.popleft().event.ack()

    async def tick(self) -> None:
        """Complete the windows the watermark passed; recompute what is due; write, judge."""
        async with self._lock:
            watermark = self.watermark
            if watermark is None:
                self._report()
                return
            stored = {p: durable for p, (_, durable) in self.marks.items()}
            ended = self.rates.advance(watermark, stored)
            recomputed = await self._recompute(stored)
            if recomputed is not None:
                ended.append(recomputed)
            if not ended:
                self._report()
                return
            alerts: list[Alert] = []
            now = self.rates.clock()
            recent = now - self.rates.history  # a backfill of last month pages nobody
            for e in ended:
                # Judged once, when complete; a recompute is not judged again.
                if e.first_time and e.start + self.rates.window >= recent:
                    # Each judgement gets its own time, so two state changes of one alert
                    # in one tick are ordered in the store by ``at``.
                    self._judged_at = at = max(now, self._judged_at + 0.001)
                    alerts.extend(
                        self.detector.evaluate(self.rates, e.start + self.rates.window, at)
                    )
            windows: list[RateWindow] = [row for e in ended for row in e.rows]
            self.sink.add_json("feedback_rates", [w.to_json() for w in windows])
            self.sink.add_json("alerts", alert_rows(alerts, published=False))  # the outbox
            await self._write()
            await self._publish(windows, alerts)
            if alerts:  # sent: a restart does not send them again
                self.sink.add_json("alerts", alert_rows(alerts, published=True))
                await self._write()
            self._observe(ended, alerts)
            if recomputed is not None:
                self._recomputed()

    async def _recompute(self, stored: dict[int, int]) -> Ended | None:
        """Read the due windows from the store (at most every RECOMPUTE_EVERY seconds)."""
        if self.store is None or time.monotonic() - self._recomputed_at < RECOMPUTE_EVERY:
            return None
        span = recompute_span(self.rates.due(stored))
        if not span:
            return None
        self._recomputed_at = time.monotonic()
        read = self.waits.blocking(STORE, "rates_recompute", read_windows)
        found = await asyncio.to_thread(read, self.rates, self.store, self.database, span)
        self.recomputes += len(span)
        return self.rates.replace(found, span)

    def _recomputed(self) -> None:
        """Messages whose late rows' windows are recomputed and written may be acknowledged."""
        dirty = self.rates.dirty.keys()
        for queue in self._order.values():
            for held in queue:
                if held.dirty:
                    held.dirty &= dirty
        self._release()

    async def _write(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sink.flush)
                break
            except SinkUnavailable as exc:  # hold the lock: input waits until it is back
                if self.metrics is not None:
                    self.metrics.sink_failures.inc()
                await self.waits.wait(STORE, "rates_insert", exc)
        self.waits.succeeded(STORE, "rates_insert")

    async def _publish(self, windows: list[RateWindow], alerts: list[Alert]) -> None:
        out: list[Outgoing] = []
        by_project: dict[str, list[bytes]] = {}
        for w in windows:
            by_project.setdefault(w.project, []).append(w.to_json())
        for project, encoded in by_project.items():  # keyed by project, as the registry says
            for start in range(0, len(encoded), 500):
                body = b"[" + b",".join(encoded[start : start + 500]) + b"]"
                out.append(Outgoing(self.topics.rates.name, body, key=project.encode()))
        for alert in alerts:  # keyed by alert: one episode's events stay in order
            out.append(Outgoing(self.topics.alerts.name, alert.to_json(), alert.alert_id.encode()))
        # Held under the lock while Kafka does not answer: the input waits, nothing is dropped.
        await deliver(self.producer, out, waits=self.waits, operation="rates_publish")
        for alert in alerts:
            self.alerts.append(alert)
            if self.notifier is not None:
                self.notifier.notify(alert)

    def _observe(self, ended: list[Ended], alerts: list[Alert]) -> None:
        self._report()
        m = self.metrics
        if m is None:
            return
        m.events_produced.labels(self.topics.alerts.name).inc(len(alerts))
        for e in ended:
            for row in e.rows:
                if row.window_seconds != self.rates.window or row.capability != ALL:
                    continue
                labels = (row.project, row.environment, row.model)
                if e.first_time and m.bounded(labels):
                    m.bad_rate.labels(*labels).set(row.bad_rate)
                    m.feedback_window.labels(*labels).set(row.total)
        for a in alerts:
            m.alerts.labels(a.rule, str(a.state)).inc()
            alert_labels = (a.rule, a.project, a.environment, a.model, a.capability)
            if m.bounded(alert_labels):
                m.alerts_firing.labels(*alert_labels).set(1 if a.state == "firing" else 0)

    def _report(self) -> None:
        """Counters the state keeps (late rows, bounds hit, recomputes) into the metrics."""
        m = self.metrics
        if m is None:
            return
        watermark = self.watermark
        if watermark is not None:
            m.rates_watermark_lag.set(max(0.0, time.time() - watermark))
        for name, value, counter in (
            ("late", self.rates.late, m.late_events),
            ("recomputes", self.recomputes, m.rate_recomputes),
            ("rate_windows", self.rates.bound_hits, m.bound_hits.labels("rate_windows")),
            ("spike_tracks", self.detector.bound_hits, m.bound_hits.labels("spike_tracks")),
        ):  # fmt: skip
            if value > self._reported.get(name, 0):
                counter.inc(value - self._reported.get(name, 0))
            self._reported[name] = value

    async def restore(self, client: StoreClient, database: str) -> None:
        """Rebuild windows and alert state from ClickHouse, and send the alert state changes
        a crash kept from being sent (call before consuming, with the producer started)."""
        await asyncio.to_thread(restore_rates, self.rates, client, database, now=time.time())
        found = await asyncio.to_thread(latest_alerts, client, database)
        self.detector.restore(found)
        unsent = await asyncio.to_thread(unpublished_alerts, client, database)
        if unsent:
            logger.warning("sending %d alert state changes stored before a crash", len(unsent))
            await self._publish([], unsent)
            self.sink.add_json("alerts", alert_rows(unsent, published=True))
            await self._write()
