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

Bad input: any Kafka client may write to ``feedback.enriched``. A message that
is not JSON or is larger than the join writes, a malformed marker
(:mod:`thumbline.stream_jobs.read_enriched`), and each row the join would not
have written (:func:`~thumbline.stream_jobs.rate_contributions.contribution`
names the field) go to the ``dlq`` topic and the ``dead_letters`` table with
their reason; the valid rows of the same message count, and the stream goes on.

Delivery: a message is acknowledged, in offset order per partition, once what
it changed is safe without it (:mod:`thumbline.stream_jobs.rates_acks`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from thumbline.kafka import Outgoing, deliver
from thumbline.metrics import Metrics
from thumbline.outages import STORE, Waits
from thumbline.schemas import Alert, DeadLetter, RateWindow, Topics, rates_partition
from thumbline.stream_jobs.bad_feedback_rates import ALL, Ended, RateState
from thumbline.stream_jobs.rate_contributions import Rejected
from thumbline.stream_jobs.rates_acks import HeldMessages
from thumbline.stream_jobs.rates_store import (
    alert_rows,
    latest_alerts,
    read_windows,
    recompute_span,
    restore_rates,
    unpublished_alerts,
)
from thumbline.stream_jobs.read_enriched import (
    Watermarks,
    read_message,
    rejected_letters,
    source_of,
)
from thumbline.stream_jobs.sink import (
    ClickHouseSink,
    SinkUnavailable,
    StoreClient,
    dead_letter_json,
)
from thumbline.stream_jobs.spike_alerts import SpikeDetector
from thumbline.stream_jobs.webhooks import WebhookNotifier

logger = logging.getLogger(__name__)

#: Windows to recompute are read from the store at most this often (one query each time).
RECOMPUTE_EVERY = 5.0


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
        #: the join's partitions: each one's worker announces it on every enriched partition
        self.sources = topics.keyed.partitions
        #: (enriched partition, join partition) -> (watermark in seconds, durable offset)
        self.marks: dict[tuple[int, int], tuple[float, int]] = {}
        #: the enriched partitions (projects) this worker counts; None: all of them
        self.owned: set[int] | None = None
        self.rebalancing = False  # between revoke() and assign(): no window completes
        self.held = HeldMessages()
        self._lock = asyncio.Lock()
        self._reported: dict[str, int] = {}
        self._judged_at = 0.0
        self._recomputed_at = 0.0
        self.recomputes = 0
        self.restored = False  # windows rebuilt from the store since the start (by assign)
        self.alerts: deque[Alert] = deque(maxlen=1000)  # the latest state changes it emitted

    def holds(self, project: str) -> bool:
        """Whether this worker counts ``project``'s windows."""
        return self.owned is None or rates_partition(project, self.partitions) in self.owned

    @property
    def watermark(self) -> float | None:
        """The lowest watermark of every join partition on every enriched partition held;
        None until each has reported (or while nothing is held)."""
        owned = range(self.partitions) if self.owned is None else sorted(self.owned)
        lowest = None
        for partition in owned:
            for source in range(self.sources):
                mark = self.marks.get((partition, source))
                if mark is None:
                    return None
                lowest = mark[0] if lowest is None else min(lowest, mark[0])
        return lowest

    async def handle(self, events: Sequence[Any]) -> None:
        """Count one micro-batch of enriched messages (row arrays and watermark markers).

        What cannot be counted is dead-lettered (written and published) before the
        messages that held it are acknowledged; their valid rows count as usual.
        """
        async with self._lock:
            counted = 0
            dead: list[DeadLetter] = []
            for event in events:
                message = event.message
                held = self.held.hold(event)
                read = read_message(message)
                if read.dead is not None:
                    dead.append(read.dead)
                    continue
                if read.watermarks is not None:
                    self._mark(read.watermarks, read.durable)
                    continue
                rows = read.rows or []
                source = (message.partition, source_of(message.key, message.partition))
                rejected: list[Rejected] = []
                dirty = self.rates.apply(
                    rows, partition=source, offset=message.offset, rejected=rejected
                )  # fmt: skip
                if rejected:
                    dead.extend(rejected_letters(message, rows, rejected, read.whole))
                    skip = {r.index for r in rejected}
                    rows = [r for i, r in enumerate(rows) if i not in skip]
                counted += len(rows)
                if rows:  # held until stored; its rows count again after a rebalance
                    held.rows, held.offset, held.source, held.dirty = (
                        rows, message.offset, source, dirty
                    )  # fmt: skip
            if dead:
                await self._dead_letter(dead)
            self.held.release(self.marks)
            if self.metrics is not None:
                self.metrics.events_consumed.labels(self.topics.enriched.name).inc(counted)

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        """Write and publish what could not be counted (before its message is acknowledged);
        a replay writes the same rows again, which the table's key collapses."""
        logger.warning(
            "dead-lettered %d enriched rows or messages another client wrote (%s)",
            len(dead), ", ".join(sorted({d.reason for d in dead})),
        )  # fmt: skip
        self.sink.add_json("dead_letters", [dead_letter_json(d) for d in dead])
        await self._write()
        out = [Outgoing(self.topics.dlq.name, d.to_json()) for d in dead]
        await deliver(self.producer, out, waits=self.waits, operation="rates_dead_letters")
        if self.metrics is not None:
            for d in dead:
                self.metrics.dead_letters.labels(d.reason).inc()

    def _mark(self, watermarks: Watermarks, durable: int) -> None:
        for key, watermark in watermarks.items():
            previous = self.marks.get(key, (watermark, durable))
            self.marks[key] = (max(previous[0], watermark), max(previous[1], durable))

    async def tick(self) -> None:
        """Complete the windows the watermark passed; recompute what is due; write, judge."""
        async with self._lock:
            watermark = self.watermark
            if watermark is None or self.rebalancing:
                self._report()
                return
            stored: dict[Any, int] = {p: durable for p, (_, durable) in self.marks.items()}
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
                self.held.recomputed(self.rates.dirty.keys(), self.marks)

    async def _recompute(self, stored: dict[Any, int]) -> Ended | None:
        """Read the due windows from the store (at most every RECOMPUTE_EVERY seconds)."""
        if self.store is None or time.monotonic() - self._recomputed_at < RECOMPUTE_EVERY:
            return None
        span = recompute_span(self.rates.due(stored))
        if not span:
            return None
        self._recomputed_at = time.monotonic()
        read = self.waits.blocking(STORE, "rates_recompute", read_windows)
        found = await asyncio.to_thread(read, self.rates, self.store, self.database, span)
        if self.owned is not None:  # the other projects' windows are another worker's
            found = {
                start: {d: c for d, c in counts.items() if self.holds(d[0])}
                for start, counts in found.items()
            }
        self.recomputes += len(span)
        return self.rates.replace(found, span)

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
        """Rebuild windows and alert state from ClickHouse for the projects held, and send
        the alert state changes a crash kept from being sent (with the producer started).
        :meth:`assign` calls it, before the partitions it got are consumed."""
        keep = None if self.owned is None else self.holds

        def rebuilt() -> RateState:  # into an empty state each time: a retry adds nothing twice
            state = self.rates.emptied()
            restore_rates(state, client, database, now=time.time(), keep=keep)
            return state

        state = await asyncio.to_thread(self.waits.blocking(STORE, "rates_restore", rebuilt))
        state.late, state.bound_hits = self.rates.late, self.rates.bound_hits
        self.rates = state
        found = await asyncio.to_thread(
            self.waits.blocking(STORE, "rates_restore", latest_alerts), client, database
        )  # fmt: skip
        self.detector.tracks.clear()
        self.detector.restore(a for a in found if self.holds(a["project"]))
        unsent = await asyncio.to_thread(
            self.waits.blocking(STORE, "rates_restore", unpublished_alerts), client, database
        )  # fmt: skip
        unsent = [a for a in unsent if self.holds(a.project)]
        if unsent:
            logger.warning("sending %d alert state changes stored before a crash", len(unsent))
            await self._publish([], unsent)
            self.sink.add_json("alerts", alert_rows(unsent, published=True))
            await self._write()
        self.restored = True

    async def revoke(self) -> None:
        """A rebalance begins: complete no window until :meth:`assign` (the next holder of
        a partition restores what this worker wrote before it)."""
        async with self._lock:
            self.rebalancing = True

    async def assign(self, partitions: set[int]) -> None:
        """The enriched partitions this worker holds after a rebalance.

        Markers and messages of partitions that left are dropped (unacknowledged:
        their next holder replays them). At the first assignment after a start,
        and whenever the share changed, the windows and alert states are rebuilt
        from the store for the projects held now (one read: a start reads
        nothing before it knows its share), and the rows of messages still held
        (not stored yet) are counted again into them.
        """
        async with self._lock:
            self.rebalancing = False
            before = set(range(self.partitions)) if self.owned is None else self.owned
            self.owned = set(partitions)
            for key in [k for k in self.marks if k[0] not in partitions]:
                del self.marks[key]
            self.held.keep(partitions)
            if self.store is None or (self.owned == before and self.restored):
                return
            await self.restore(self.store, self.database)
            for held in self.held:
                if held.source is not None:
                    held.dirty = self.rates.apply(
                        held.rows, partition=held.source, offset=held.offset
                    )  # fmt: skip
            logger.info(
                "the rates count %d of %d partitions", len(self.owned), self.partitions,
                extra={"partitions": sorted(self.owned)},
            )  # fmt: skip
