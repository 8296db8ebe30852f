"""join_traces: every feedback event joined with its trace, written to ClickHouse and Kafka.

Reads ``keyed``: the input events re-keyed by trace id, hundreds to a message,
by :mod:`thumbline.stream_jobs.key_by_trace` (the default), or else ``feedback`` and
``traces`` as producers wrote them; and, either way, events this job forwarded
to the partition of their ``trace_id``. Per micro-batch it:

1. decodes and validates every event (:mod:`thumbline.stream_jobs.decode_input`) and
   applies the score config of each feedback name (read from the store at start
   and again every ``score_configs_seconds``); bad input becomes a dead letter
   (the ``dlq`` topic and the ``dead_letters`` table) with its reason and the
   topic, partition and offset it was sent to, and nothing else is lost;
2. forwards events that sit on the wrong partition to ``keyed`` (producers in
   other languages hash differently), so each trace's events meet in one place;
3. merges traces into the state, asks ClickHouse once for the traces it does
   not hold, and joins the feedback (:mod:`thumbline.stream_jobs.join_state`);
4. writes traces, enriched feedback and dead letters to the ClickHouse sink and
   publishes enriched feedback and dead letters to Kafka.

Delivery (:mod:`thumbline.stream_jobs.join_output`): an input message is
acknowledged only when every event in it is durably somewhere, and so is every
message before it on its partition; feedback still waiting for its trace keeps
its message unacknowledged, so a crash replays it.

Feedback that has waited a moment (``pending_row_seconds``) is also written to
the ``feedback`` table as a *pending* row, for people to see; it is not
published (the rates count outcomes only) and acknowledges nothing. Its version
is the lowest of its copy, so its joined or orphan row replaces it, and a
replay writes it again only under that row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from thumbline.metrics import Metrics, gained
from thumbline.outages import Waits
from thumbline.schemas import EnrichedFeedback, FeedbackEvent, TimeBounds, Topics, partition_for
from thumbline.schemas.score_configs import ScoreConfig, ScoreConfigIndex
from thumbline.stream_jobs.decode_input import Batch, DecodeInput
from thumbline.stream_jobs.enriched_rows import TraceAttributes
from thumbline.stream_jobs.join_output import JoinOutput
from thumbline.stream_jobs.join_state import JoinState, Key, key_of
from thumbline.stream_jobs.sink import ClickHouseSink, feedback_record
from thumbline.stream_jobs.votes import OneVote, one_vote, votes_rule
from thumbline.stream_jobs.watermarks import Watermarks

logger = logging.getLogger(__name__)

#: Seconds between two looks in the store for the conversations and sessions that
#: feedback waits for (each one query for all of them).
TARGET_LOOKUP_SECONDS = 2.0
#: Most conversations and sessions looked up in one round (one lookup query).
TARGET_LOOKUP_KEYS = 5_000


class JoinTracesJob:
    """The join's work per micro-batch; the Faust agent and timer call into it.

    Args:
        topics: the registry (names and partition counts).
        state: the join state of this worker.
        sink: the ClickHouse sink, used only from this job.
        lookup: looks (project, trace_id) keys up in ClickHouse (blocking; run in a thread).
        orphans: loads the orphans a late trace may still correct (blocking).
        producer: a started AIOKafkaProducer for enriched, dlq and keyed.
        metrics: where to report (optional): counts are synced on each tick,
            insert time and freshness observed per write.
        time_bounds: how far event times may lie from their reception; events
            beyond become dead letters ``ts_out_of_range``.
        waits: where sends and inserts that wait out an outage report (readiness).
        routed: the input comes through :mod:`thumbline.stream_jobs.key_by_trace` (``keyed``
            alone); its markers then bound the watermark.
        score_configs: reads the score configs in force from the store (blocking; run
            in a thread); None: no configs.
        score_configs_seconds: how often they are read again. A read that fails keeps
            the configs last read and is tried again at the next turn: the stream
            never stops for it.
        one_vote_per_user: one vote per person for every feedback name (the setting);
            else for the names whose score config says so (:mod:`thumbline.stream_jobs.votes`).
            Applied to every validated event before it is joined, so every input path gets
            the same rows.
    """

    def __init__(
        self,
        *,
        topics: Topics,
        state: JoinState,
        sink: ClickHouseSink,
        lookup: Callable[[list[Key]], dict[Key, TraceAttributes]],
        producer: AIOKafkaProducer,
        orphans: Callable[[], list[FeedbackEvent]] = list,
        metrics: Metrics | None = None,
        time_bounds: TimeBounds = TimeBounds(),  # noqa: B008 (frozen)
        waits: Waits | None = None,
        routed: bool = False,
        score_configs: Callable[[], list[ScoreConfig]] | None = None,
        score_configs_seconds: float = 5.0,
        one_vote_per_user: bool = False,
    ) -> None:
        self.topics = topics
        self.one_vote_per_user = one_vote_per_user
        self.one_vote: OneVote | None = votes_rule((), one_vote_per_user)
        self.counts: dict[str, int] = defaultdict(int)
        self.waits = waits or Waits(metrics)
        self.time_bounds = time_bounds
        self.metrics = metrics
        self._synced: dict[str, int] = {}
        self.partitions = topics.feedback.partitions
        self.state = state
        self.sink = sink
        self.lookup = lookup
        self.load_orphans = orphans
        self.owned: set[int] = set()  # partitions of the join's topics this worker holds
        self.rebalancing = False  # between revoke() and assign()
        self.producer = producer
        self._lock = asyncio.Lock()
        self.marks = Watermarks(topics, producer, routed=routed)  # how far input is stored
        self.decoder = DecodeInput(topics, time_bounds, self.counts, routed=self.marks.routed)
        #: the sink's writes, Kafka's sends, and when input is acknowledged
        self.output = JoinOutput(
            topics=topics, sink=sink, producer=producer, marks=self.marks, counts=self.counts,
            metrics=metrics, waits=self.waits,
        )  # fmt: skip
        self.first_input_at: float | None = None  # wall time of the first micro-batch
        self.read_score_configs = score_configs
        self.score_configs_seconds = score_configs_seconds
        self._configs_read_at = time.monotonic()
        self._reading_configs: asyncio.Task[None] | None = None
        self._next_target_lookup = 0.0  # monotonic time of the next look for targets

    # The agent's entry point ---------------------------------------------------

    async def handle(self, events: Sequence[Any]) -> None:
        """Process one micro-batch of faust events (raw bytes values)."""
        if self.first_input_at is None:
            self.first_input_at = time.time()
            logger.info("join: first input", extra={"at": self.first_input_at})
        async with self._lock:
            batch = Batch()
            for event in events:
                # Every message held first: if anything below raises, none is acknowledged.
                batch.held.append(self.output.hold(event))
                self.marks.handled(event.message)
            for held in batch.held:
                self.decoder.decode(held.event.message, held, batch)
            if self.one_vote is not None:
                applies = self.one_vote
                batch.feedback = [
                    ([one_vote(e, applies) for e in items], held) for items, held in batch.feedback
                ]  # fmt: skip
            rows = self.state.add_traces(batch.traces)
            await self._lookup_unknown(batch)
            for items, held in batch.feedback:
                joined = self.state.add_feedback(items, refs=[held] * len(items))
                held.outstanding += len(items) - len(joined)
                rows.extend(joined)
            self._release()
            await self.output.emit(rows, batch.traces, batch.dead, batch.forward)
            self.output.processed(batch.held)
            self.counts["messages"] += len(events)
            if self.sink.due():
                await self.output.flush()

    def set_score_configs(self, configs: list[ScoreConfig]) -> None:
        """Apply ``configs`` to every feedback event decoded from now on (their labels,
        and which names count one vote per person)."""
        self.decoder.configs = ScoreConfigIndex(configs)
        self.one_vote = votes_rule(configs, self.one_vote_per_user)

    def _refresh_score_configs(self) -> None:
        """Read the score configs again when due, in a task of their own (never waited on)."""
        if self.read_score_configs is None:
            return
        now = time.monotonic()
        busy = self._reading_configs is not None and not self._reading_configs.done()
        if busy or now - self._configs_read_at < self.score_configs_seconds:
            return
        self._configs_read_at = now
        self._reading_configs = asyncio.create_task(self._read_score_configs())

    async def _read_score_configs(self) -> None:
        assert self.read_score_configs is not None  # noqa: S101 (checked by the caller)
        try:
            configs = await asyncio.to_thread(self.read_score_configs)
        except Exception as exc:  # noqa: BLE001 (any failure: keep the last, read again later)
            self.counts["score_configs_unread"] += 1
            logger.warning(
                "could not read the score configs (the last ones read stay in force; "
                "read again in %g s): %s", self.score_configs_seconds, exc,
            )  # fmt: skip
            return
        self.set_score_configs(configs)

    async def tick(self) -> None:
        """Called periodically: pending rows, orphans whose grace ended, flushes by age,
        score configs, metrics."""
        self.sync_metrics()
        self._refresh_score_configs()
        async with self._lock:
            waiting = self.state.announce()
            if waiting:  # to the store only: not an outcome, and no input waits for it
                self.sink.add_records("feedback", [feedback_record(r) for r in waiting])
                self.counts["pending_rows"] += len(waiting)
            if self.rebalancing:
                pass  # no orphans for partitions that may be moving (see revoke)
            elif self.state.pending:
                rows = await self._look_for_targets()
                rows += await asyncio.to_thread(self.state.expire, self.lookup)
                self._release()
                if rows:
                    await self.output.emit(rows, [], [], {})
            else:
                self.state.expire()
            if self.sink.due() or (self.output.waiting and not self.sink.pending):
                await self.output.flush()
            if not self.rebalancing:  # the partitions' next holders announce them
                await self.marks.send(self.owned, self.output.order)

    async def flush(self) -> None:
        """Write and acknowledge what is complete."""
        async with self._lock:
            await self.output.flush()
            await self.output.drain()

    async def revoke(self) -> None:
        """A rebalance begins: flush, and emit no orphan until :meth:`assign`.

        Every worker flushes before the group reassigns partitions, and none
        emits orphans meanwhile, so the new holder of a partition finds in the
        store every orphan emitted for it (it loads them in :meth:`assign`).
        """
        self.rebalancing = True
        await self.flush()

    async def assign(self, partitions: set[int]) -> None:
        """The join's partitions after a rebalance: forget what moved away, load what came.

        Feedback waiting on a partition that moved is dropped, unacknowledged: its
        new owner replays it from the last commit. The traces and correctable
        orphans of a partition stay with the worker that holds it; orphans of a
        partition that came here are loaded from the store.
        """
        async with self._lock:
            self.rebalancing = False
            lost, gained = self.owned - partitions, partitions - self.owned
            self.owned = set(partitions)
            if lost:
                self.state.forget(lambda trace_id: partition_for(trace_id, self.partitions) in lost)
                self.output.forget(lost)
                self.marks.forget(lost)
            if gained:
                found = await asyncio.to_thread(self.load_orphans)
                self.state.add_orphans(
                    o for o in found if partition_for(o.join_key, self.partitions) in gained
                )
            if lost or gained:
                logger.info(
                    "join partitions now %s (moved away %s, came %s)",
                    sorted(partitions), sorted(lost), sorted(gained),
                )  # fmt: skip

    async def close(self) -> None:
        """Flush what is complete; held feedback stays unacknowledged for the next start."""
        reading, self._reading_configs = self._reading_configs, None
        if reading is not None:
            reading.cancel()
        await self.flush()

    def sync_metrics(self) -> None:
        """Report what the counts gained since the last call (cheaper than per event)."""
        m = self.metrics
        if m is None:
            return
        m.join_pending.set(self.state.pending_count)
        for structure, hits in self.state.bound_hits.items():
            self.counts[f"bound:join_{structure}"] = hits
        for key, delta in gained(self.counts, self._synced):
            kind, _, name = key.partition(":")
            if kind == "in":
                m.events_consumed.labels(name).inc(delta)
            elif kind == "out":
                m.events_produced.labels(name).inc(delta)
            elif kind == "rows":
                m.sink_rows.labels(name).inc(delta)
            elif kind == "batches":
                m.sink_batches.labels(name).inc(delta)
            elif key in ("joined", "orphan", "corrected"):
                m.join_outcomes.labels(key).inc(delta)
            elif kind == "bound":
                m.bound_hits.labels(name).inc(delta)
            elif key.startswith("dead_"):
                m.dead_letters.labels(key.removeprefix("dead_")).inc(delta)
            elif key == "flush_failures":
                m.sink_failures.inc(delta)

    # Steps ---------------------------------------------------------------------

    async def _lookup_unknown(self, batch: Batch) -> None:
        traces, pending = self.state.traces, self.state.pending
        unknown = {
            key
            for items, _ in batch.feedback
            for e in items
            if (key := key_of(e)) not in traces and key not in pending
        }
        if unknown:
            found = await asyncio.to_thread(self.lookup, list(unknown))
            self.state.add_known_traces(found)

    async def _look_for_targets(self) -> list[EnrichedFeedback]:
        """Feedback on a conversation or session that waits for its first stored trace:
        looked up again every ``TARGET_LOOKUP_SECONDS`` rather than only when its grace
        ends (its traces reach the store through other partitions, unseen here). At most
        ``TARGET_LOOKUP_KEYS`` a round, so that feedback on conversations nobody traces
        costs one bounded query every round; the others are looked up when their grace
        ends, as every waiting feedback is."""
        now = time.monotonic()
        if now < self._next_target_lookup:
            return []
        self._next_target_lookup = now + TARGET_LOOKUP_SECONDS
        keys = self.state.waiting_targets()[:TARGET_LOOKUP_KEYS]
        if not keys:
            return []
        found = await asyncio.to_thread(self.lookup, keys)
        return self.state.resolve(found)

    def _release(self) -> None:
        self.output.release(self.state.take_released())
