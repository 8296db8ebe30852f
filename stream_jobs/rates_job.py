"""The rates and alerts job: enriched feedback in, rate windows and spike alerts out.

Per micro-batch of ``feedback.enriched`` messages it counts the rows
(:class:`~stream_jobs.bad_feedback_rates.RateState`); on each tick it ends and
closes windows by the clock, writes their rows to ``rates`` and
``feedback_rates``, and runs the spike rules
(:class:`~stream_jobs.spike_alerts.SpikeDetector`) on every base window that
ended, writing state changes to ``alerts`` (topic and table), the webhooks and
the metrics.

Delivery: the input is acknowledged as soon as it is counted. That is safe
because nothing here is the only copy: the rows are in ``feedback`` (the join
writes them first or replays them), and a restarted worker rebuilds its
windows and its alert state from ClickHouse (:meth:`RatesJob.restore`), so
counts stay exact and a firing alert does not fire again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from schemas import Alert, RateWindow, Topics
from stream_jobs.bad_feedback_rates import ALL, Counts, RateState
from stream_jobs.sink import ClickHouseSink, SinkUnavailable
from stream_jobs.spike_alerts import SpikeDetector
from stream_jobs.webhooks import WebhookNotifier
from thumbline.kafka import Outgoing, deliver
from thumbline.metrics import Metrics
from thumbline.outages import STORE, Waits

logger = logging.getLogger(__name__)

#: After a restart, windows are held (open, neither written nor judged) until
#: the join's output is fresh, or until no input at all has come for
#: ``RESUME_IDLE`` seconds, or at most ``MAX_HOLD`` seconds (a join that stays
#: behind must not keep rates and alerts from being written forever).
RESUME_IDLE = 120.0
#: Output is fresh when received less than max(lateness, this) seconds ago: with a
#: lateness shorter than the join's own latency the hold would never see fresh rows.
FRESH_WITHIN = 10.0
MAX_HOLD = 900.0
#: After a rebalance of the join (no restore, only moved partitions to replay),
#: the hold also ends after this long without input: the replay is a short tail.
REBALANCE_IDLE = 10.0


def _received(row: dict[str, Any]) -> float:
    at = row.get("received_at") or row["ts"]
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return float(at.timestamp())


class RatesJob:
    """Counts, windows and alerts of one worker; the Faust agent and timer call into it."""

    def __init__(
        self,
        *,
        topics: Topics,
        rates: RateState,
        detector: SpikeDetector,
        sink: ClickHouseSink,
        producer: AIOKafkaProducer,
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
        self.notifier = notifier
        self.metrics = metrics
        self._lock = asyncio.Lock()
        self._late_reported = 0
        self._bounds_reported: dict[str, int] = {}
        # Windows restored at start are written again but not judged: they ended
        # before this worker ran, and judging them late in a row could resolve or
        # fire an alert out of order.
        self._judge_after = 0.0
        self._held_at = 0.0  # when the current hold began
        self._resume_idle = RESUME_IDLE
        self._resumed = True  # held windows released (see RateState.hold)
        self._last_input = 0.0
        self._judged_at = 0.0
        self.alerts: deque[Alert] = deque(maxlen=1000)  # the latest state changes it emitted

    async def handle(self, events: Sequence[Any]) -> None:
        """Count one micro-batch of enriched messages (JSON arrays of rows)."""
        async with self._lock:
            rows: list[dict[str, Any]] = []
            for event in events:
                try:
                    value = orjson.loads(event.message.value)
                except orjson.JSONDecodeError:
                    logger.warning("skipped an enriched message that is not JSON")
                    continue
                rows.extend(value if isinstance(value, list) else [value])
            self.rates.apply(rows)
            self._last_input = self.rates.clock()
            if not self._resumed and self._join_output_seen(rows):
                self._resume()
            if self.metrics is not None:
                self.metrics.events_consumed.labels(self.topics.enriched.name).inc(len(rows))

    def _resume(self) -> None:
        self._resumed = True
        self.rates.resume()
        logger.info(
            "rates resumed %.1fs after the restore (%d events counted, %d late)",
            self.rates.clock() - self._held_at, self.rates.applied, self.rates.late,
        )  # fmt: skip

    def _join_output_seen(self, rows: list[dict[str, Any]]) -> bool:
        """True once the join's output is fresh: rows it received after this
        restart and less than one lateness (at least ``FRESH_WITHIN``) ago. Its
        replay is in but for the skew between partitions, which the lateness
        period after covers."""
        behind = max(self.rates.lateness, FRESH_WITHIN)
        fresh = max(self._held_at, self.rates.clock() - behind)
        return any(_received(r) >= fresh for r in rows)

    async def tick(self) -> None:
        """End and close windows by the clock; write rows, judge the ended windows."""
        async with self._lock:
            if not self._resumed:
                now = self.rates.clock()
                idle_since = max(self._held_at, self._last_input)
                if now < idle_since + self._resume_idle and now < self._held_at + MAX_HOLD:
                    return  # the replay is not in yet: windows would be short
                self._resume()  # no input for a while, or held long enough
            ended = self.rates.advance()
            if not ended:
                self._report_late()
                return
            now = self.rates.clock()
            windows: list[RateWindow] = [row for e in ended for row in e.rows]
            alerts: list[Alert] = []
            for e in ended:
                if e.first_time and e.start + self.rates.window > self._judge_after:
                    end = e.start + self.rates.window
                    # Each judgement gets its own time, so two state changes of one alert
                    # in one tick (after a hold) are ordered in the store by ``at``.
                    self._judged_at = at = max(now, self._judged_at + 0.001)
                    alerts.extend(self.detector.evaluate(self.rates, end, at))
            self.sink.add_json("feedback_rates", [w.to_json() for w in windows])
            self.sink.add_json("alerts", [a.to_json() for a in alerts])
            await self._write()
            await self._publish(windows, alerts)
            self._observe(ended, alerts)

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

    def _observe(self, ended: list[Any], alerts: list[Alert]) -> None:
        self._report_late()
        m = self.metrics
        if m is None:
            return
        m.events_produced.labels(self.topics.alerts.name).inc(len(alerts))
        for e in ended:
            for row in e.rows:
                if row.window_seconds != self.rates.window or row.capability != ALL:
                    continue
                labels = (row.project, row.environment, row.model)
                if m.bounded(labels):
                    m.bad_rate.labels(*labels).set(row.bad_rate)
                    m.feedback_window.labels(*labels).set(row.total)
        for a in alerts:
            m.alerts.labels(a.rule, str(a.state)).inc()
            alert_labels = (a.rule, a.project, a.environment, a.model, a.capability)
            if m.bounded(alert_labels):
                m.alerts_firing.labels(*alert_labels).set(1 if a.state == "firing" else 0)

    def _report_late(self) -> None:
        m = self.metrics
        if m is not None and self.rates.late > self._late_reported:
            m.late_events.inc(self.rates.late - self._late_reported)
        self._late_reported = self.rates.late
        for structure, hits in (
            ("rate_windows", self.rates.bound_hits), ("spike_tracks", self.detector.bound_hits),
        ):  # fmt: skip
            reported = self._bounds_reported.get(structure, 0)
            if m is not None and hits > reported:
                m.bound_hits.labels(structure).inc(hits - reported)
            self._bounds_reported[structure] = hits

    def hold(self) -> None:
        """From now until the join's output is fresh, write and judge no window.

        Windows that ended while no worker ran, or while this one started, are
        still taking the join's replay; written now they would come out short,
        and judged now they could resolve a firing alert that is not over.
        """
        self._judge_after = self._held_at = self.rates.clock()
        self._resume_idle = RESUME_IDLE
        self._resumed = False

    def rebalanced(self) -> None:
        """The join's partitions moved between workers (a helper joined, left or died).

        The partitions that moved are replayed from their last commit by their
        new holder, possibly after the windows of those rows would have closed
        (a dead helper's partitions wait out the session timeout). So the windows
        open now are held as after a restart, without the restore, until the
        join's output is fresh again, or no input came for ``REBALANCE_IDLE``
        seconds (the replay is a short tail); windows are judged as usual.
        """
        self.rates.hold_open()
        if self._resumed:  # a restore's hold keeps its longer idle limit
            self._resume_idle = REBALANCE_IDLE
        self._held_at = self.rates.clock()
        self._resumed = False

    async def restore(self, client: Client, database: str, *, recovery: float) -> None:
        """Rebuild windows and alert state from ClickHouse (call before consuming)."""
        self.hold()
        now = self._judge_after
        await asyncio.to_thread(
            restore_rates, self.rates, client, database, now=now, recovery=recovery
        )
        found = await asyncio.to_thread(latest_alerts, client, database)
        self.detector.restore(found)


def restore_rates(
    rates: RateState, client: Client, database: str, *, now: float, recovery: float
) -> None:
    """Rebuild the windows of the last ``rates.history`` seconds at start.

    - the closed windows this job wrote to ``feedback_rates`` come back as
      counts (cheap, whatever the volume), for sliding windows and baselines;
    - from the first window it did not write (at the latest ``recovery``
      seconds ago), the rows of ``feedback`` event by event, and every window
      from there on is held open until the stream has caught up. A worker down
      longer than ``recovery`` thus still gets exact windows for its downtime:
      the join's replay of rows not in ``feedback`` yet lands in them, and rows
      in both count once.
    """
    window = rates.window
    recent = (now - recovery) // window * window
    since = (now - rates.history) // window * window
    stored = client.query(
        # database is an identifier checked by Settings; values go in as parameters
        "SELECT toUnixTimestamp(window_start) AS start, project, environment, model, "  # noqa: S608
        "capability, good, bad, neutral, implicit, with_comment, score_sum, score_count "
        f"FROM {database}.feedback_rates FINAL WHERE window_seconds = {int(window)} "
        "AND window_start >= fromUnixTimestamp64Milli({since:Int64}) "
        "AND window_start < fromUnixTimestamp64Milli({recent:Int64})",
        parameters={"since": int(since * 1000), "recent": int(recent * 1000)},
    ).result_rows
    last = since - window
    for start, project, environment, model, capability, *c in stored:
        counts = Counts(c[0], c[1], c[2], c[3], c[4], float(c[5]), c[6])
        rates.restore_counts(float(start), (project, environment, model, capability), counts)
        last = max(last, float(start))
    replay_from = min(recent, last + window)
    result = client.query(
        "SELECT event_id, trace_id, version, ts, label, source, comment, score, retracted, "  # noqa: S608
        "project, environment, model, capability "
        f"FROM {database}.feedback FINAL "
        "WHERE ts >= fromUnixTimestamp64Milli({replay_from:Int64})",
        parameters={"replay_from": int(replay_from * 1000)},
    )
    names = result.column_names
    rows = []
    for values in result.result_rows:
        row = dict(zip(names, values, strict=True))
        if row["ts"].tzinfo is None:
            row["ts"] = row["ts"].replace(tzinfo=UTC)
        rows.append(row)
    rates.hold(replay_from)
    rates.apply(rows)
    logger.info(
        "rates restored: %d stored windows, %d events since %s",
        len(stored), len(rows), datetime.fromtimestamp(replay_from, UTC).isoformat(),
    )  # fmt: skip


def latest_alerts(client: Client, database: str) -> list[dict[str, Any]]:
    """The newest state of each (rule, dimensions), as the detector restores it."""
    result = client.query(
        "SELECT rule, project, environment, model, capability, "  # noqa: S608
        "argMax(alert_id, at) AS alert_id, argMax(state, at) AS state, "
        "argMax(window_start, at) AS window_start, max(at) AS changed_at "
        f"FROM {database}.alerts FINAL "
        "GROUP BY rule, project, environment, model, capability"
    )
    out = []
    for values in result.result_rows:
        row = dict(zip(result.column_names, values, strict=True))
        row["at"] = row.pop("changed_at")  # as an Alert names it
        for name in ("window_start", "at"):
            if isinstance(row[name], datetime) and row[name].tzinfo is None:
                row[name] = row[name].replace(tzinfo=UTC)
        out.append(row)
    return out
