"""key_by_trace: every input event re-keyed by its trace id, hundreds to a message, for the join.

    feedback, traces ──► key_by_trace (plain aiokafka) ──► keyed ──► join_traces (Faust)
    otlp_spans ───────┘  (the OpenTelemetry Collector's, read by stream_jobs/read_otlp.py)

Producers in any language send one JSON object per Kafka message and hash keys
their own way (librdkafka: CRC32), so most events arrive on a partition other
than their trace's. Faust pays per message (about 5,000 messages/s on two
cores), which capped the join at that rate for such producers. This stage reads
the input topics with ``getmany`` and, per batch, publishes one message per
partition of ``keyed`` with every event bound there, hundreds to a message
(:mod:`thumbline.stream_jobs.keyed_messages`: their form, and what becomes a
dead letter here). It validates nothing: the join does, once.

Any number of stages run, one per worker, in one consumer group
(``<join group>-key_by_trace``); no stage is special. Kafka's group assignment
splits the input partitions among them and moves a partition when a stage comes,
stops (it leaves the group) or dies (after the session timeout); the
partition's next holder reads it from the last commit, where a stage that never
committed starts from the join's own group (the input before this stage
existed):

    feedback, traces ─┬─► key_by_trace (worker 1: its share of the input partitions) ─┬─► keyed
                      └─► key_by_trace (worker 2: the others) ─────────────────────────┘

Each second every stage also sends to every partition of ``keyed`` the input
partitions it holds, each with how far it is routed, and how many exist in all
(:mod:`thumbline.stream_jobs.routed_marks`):

    {"routed_inputs": {"<topic>:<partition>": ms, ...}, "inputs": N}

Every message of such an input partition older than ``ms`` is in ``keyed``
before this marker (``ms`` is the clock while the stage has caught up with that
partition). The join's watermark counts a partition of ``keyed`` as routed only
as far as the lowest claim over all N input partitions, so a stage that lags,
or a partition nobody reports yet, holds the rate windows back instead of
letting them complete short.

Delivery: input offsets are committed only after Kafka acknowledged every keyed
message of the batch; partitions move to another stage only once the batch
under way is committed. A crash, or a commit the group refuses because it
rebalanced meanwhile, replays the batch on the partitions' next holder; the
join's tables and the rates count events by identity, so a second copy changes
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from thumbline.kafka import Outgoing, deliver
from thumbline.metrics import Metrics, gained
from thumbline.outages import KAFKA, WaitAborted, Waits, transient
from thumbline.schemas import Topics
from thumbline.stream_jobs.input_group import REBALANCED, input_consumer, start_offsets
from thumbline.stream_jobs.keyed_messages import route
from thumbline.stream_jobs.read_otlp import ReadOtlp
from thumbline.stream_jobs.routed_marks import marker

logger = logging.getLogger(__name__)

#: Seconds between two ``routed`` markers.
MARK_EVERY = 1.0
#: Longest wait for input in one ``getmany``.
POLL_MS = 50
#: Input messages routed per batch, at most.
MAX_RECORDS = 10_000


class KeyByTrace:
    """The stage: ``start()``, ``stop()``; runs as a task in the stream's event loop.

    Any number of stages share the consumer group ``group``: Kafka's group
    assignment gives each a share of the input partitions, and moves them when a
    stage comes or goes (:class:`_Rebalance`). Kafka that does not answer is
    waited out (fetch, publish, commit), reported in ``waits`` (readiness) as the
    join's sends are. ``consumer``: a stand-in for tests; by default an
    AIOKafkaConsumer subscribed in ``group``.
    """

    def __init__(
        self,
        *,
        topics: Topics,
        bootstrap: str,
        group: str,
        producer: AIOKafkaProducer,
        waits: Waits,
        kafka_kwargs: dict[str, Any] | None = None,
        metrics: Metrics | None = None,
        max_records: int | None = None,
        fetch_max_wait_ms: int = 100,
        consumer: Any = None,
        otlp: ReadOtlp | None = None,
    ) -> None:
        self.topics = topics
        self.otlp = otlp
        self.producer = producer
        self.waits = waits
        self.metrics = metrics
        self.counts: dict[str, int] = defaultdict(int)
        self._synced: dict[str, int] = {}
        self.max_records = max_records or MAX_RECORDS
        self.bootstrap, self.kafka_kwargs = bootstrap, kafka_kwargs or {}
        self.consumer = consumer or input_consumer(
            bootstrap=bootstrap, group=group, fetch_max_wait_ms=fetch_max_wait_ms,
            kafka_kwargs=self.kafka_kwargs,
        )  # fmt: skip
        #: every input partition that exists (the stages hold a share each)
        self.inputs = [
            TopicPartition(t.name, p)
            for t in (topics.feedback, topics.traces)
            for p in range(t.partitions)
        ]
        # per input partition held: the next offset to route, and the time (ms) of the
        # last one routed; exactly the partitions the group gave this stage
        self._done: dict[TopicPartition, tuple[int, int]] = {}
        # held while a batch is published and committed, and while partitions move: a
        # partition's next holder starts after the batch under way (aiokafka's getmany
        # returns records of the current assignment only, never during a rebalance)
        self._routing = asyncio.Lock()
        self._take_over_from: str | None = None
        self._marked_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.first_input_at: float | None = None

    async def start(self, *, take_over_from: str | None = None) -> None:
        """Join the group; each input partition it is given is read from the group's
        committed offset, where it has none from that of ``take_over_from`` (the join's
        group, which read the input before this stage existed), else from the earliest."""
        await self.consumer.start()
        topics = [self.topics.feedback.name, self.topics.traces.name]
        if self.otlp is not None:  # the Collector's topic: however many partitions it has
            await self.consumer.topics()  # its metadata
            found = self.consumer.partitions_for_topic(self.otlp.topic) or set()
            self.inputs += [TopicPartition(self.otlp.topic, p) for p in sorted(found)]
            if found:
                topics.append(self.otlp.topic)
            else:
                logger.warning("the OpenTelemetry topic %s does not exist: its spans are not "
                               "read (thumbline up creates it)", self.otlp.topic)  # fmt: skip
        self._take_over_from = take_over_from
        self.consumer.subscribe(topics, listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name="key_by_trace")

    @property
    def held(self) -> frozenset[TopicPartition]:
        """The input partitions the group gives this stage now."""
        return frozenset(self._done)

    async def revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """The group takes ``revoked`` away (before it rebalances): the batch under way
        is published and committed first, so their next holder starts after it."""
        async with self._routing:
            for tp in revoked:
                self._done.pop(tp, None)

    async def assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """The group gives this stage ``assigned`` (after it rebalanced)."""
        async with self._routing:
            new = [tp for tp in assigned if tp not in self._done]
            while True:
                try:
                    starts = await start_offsets(
                        self.consumer, new, take_over_from=self._take_over_from,
                        bootstrap=self.bootstrap, kafka_kwargs=self.kafka_kwargs,
                    ) if new else {}  # fmt: skip
                    break
                except KafkaError as exc:  # the broker away: the group waits for this stage
                    if not transient(exc) and not getattr(exc, "retriable", False):
                        self.failure = exc
                        raise
                    await self.waits.wait(KAFKA, "key_by_trace_assign", exc)
                except WaitAborted:
                    raise  # stopping while the broker is away
                except Exception as exc:
                    # aiokafka only logs what a listener raises: the app's failure watch
                    # ends the worker instead of leaving partitions it never reports
                    self.failure = exc
                    raise
            self.waits.succeeded(KAFKA, "key_by_trace_assign")
            for tp, start in starts.items():
                self._done[tp] = (start, 0)  # caught up there if nothing follows
        if new:
            logger.info("key_by_trace holds %d input partitions", len(self._done))

    async def stop(self) -> None:
        """Stop reading and leave the group; what was routed is committed, the rest is
        read again by the partitions' next holder."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.consumer.stop()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    fetched = await self.consumer.getmany(
                        timeout_ms=POLL_MS, max_records=self.max_records
                    )  # fmt: skip
                except KafkaError as exc:  # the broker away: read again once it answers
                    if not transient(exc) and not getattr(exc, "retriable", False):
                        raise
                    await self.waits.wait(KAFKA, "key_by_trace_fetch", exc)
                    continue
                self.waits.succeeded(KAFKA, "key_by_trace_fetch")
                if fetched:
                    async with self._routing:
                        await self._route(fetched)
                await self._mark()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc  # the app's failure watch ends the worker
            logger.exception("key_by_trace failed")
            raise

    async def _route(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        fetched = self._unrouted(fetched)
        if not fetched:
            return
        if self.first_input_at is None:
            self.first_input_at = time.time()
            logger.info("key_by_trace: first input", extra={"at": self.first_input_at})
        records = [r for rs in fetched.values() for r in rs]
        by_partition = route(self.topics, records, counts=self.counts, otlp=self.otlp)
        # a keyed message is as old as its input (a record without a time: sent now)
        oldest = min(r.timestamp for r in records)
        oldest = oldest if oldest > 0 else None
        out = [
            Outgoing(self.topics.keyed.name, value, partition=p, timestamp_ms=oldest)
            for p, values in by_partition.items()
            for value in values
        ]
        await deliver(self.producer, out, waits=self.waits, operation="key_by_trace_publish")
        self.counts["messages"] += len(records)
        for tp, rs in fetched.items():
            self._done[tp] = (rs[-1].offset + 1, rs[-1].timestamp)
        await self._commit({tp: rs[-1].offset + 1 for tp, rs in fetched.items()})

    def _unrouted(self, fetched: dict[TopicPartition, list[Any]]) -> dict[Any, list[Any]]:
        """The records not before where each partition starts: aiokafka may return a
        newly assigned partition's records from its reset position while the listener
        still looks up where the join left it (and seeks there)."""
        kept = {}
        for tp, records in fetched.items():
            start = self._done.get(tp)
            if start is not None and records and records[0].offset < start[0]:
                records = [r for r in records if r.offset >= start[0]]
            if records:
                kept[tp] = records
        return kept

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        while True:
            try:
                await self.consumer.commit(offsets)
                self.waits.succeeded(KAFKA, "key_by_trace_commit")
                return
            except REBALANCED as exc:
                # The group moved partitions meanwhile (this stage was too slow to
                # heartbeat, or left): their next holder replays the batch from the last
                # commit, and the join counts events by identity, so a second copy
                # changes nothing.
                logger.info("key_by_trace: a commit was refused after a rebalance (%s); the "
                            "batch is routed again by its partitions' holders", exc)  # fmt: skip
                return
            except KafkaError as exc:
                if not transient(exc) and not getattr(exc, "retriable", False):
                    raise
                await self.waits.wait(KAFKA, "key_by_trace_commit", exc)

    def claims(self, now: float) -> dict[TopicPartition, float]:
        """Per input partition held: every message of it older than this (seconds) is in
        ``keyed``. A partition not fetched from yet (its end unknown) is not claimed."""
        claims = {}
        for tp, (offset, at) in self._done.items():
            try:
                high = self.consumer.highwater(tp)
            except (AssertionError, IllegalStateError):  # revoked by a rebalance in flight
                continue
            if high is not None:
                # caught up, or behind: everything routed is older than the last one routed
                claims[tp] = now if offset >= high else at / 1000
        return claims

    async def _mark(self) -> None:
        now = time.time()
        if now - self._marked_at < MARK_EVERY:
            return
        claims = self.claims(now)
        if not claims:
            return
        self._marked_at = now
        value = marker(claims, inputs=len(self.inputs))
        out = [
            Outgoing(self.topics.keyed.name, value, partition=p)
            for p in range(self.topics.keyed.partitions)
        ]
        try:
            await deliver(self.producer, out, waits=self.waits, operation="key_by_trace_mark")
        except Exception as exc:
            if not transient(exc):
                raise
            logger.debug("a routed marker was not sent: %s", exc)

    def lag(self) -> dict[str, int]:
        """Messages of each input topic not yet routed, over the partitions held (what
        the consumer has seen of them)."""
        lag: dict[str, int] = defaultdict(int)
        for tp, (offset, _) in list(self._done.items()):
            try:
                high = self.consumer.highwater(tp)
            except (AssertionError, IllegalStateError):
                continue
            if high is not None:
                lag[tp.topic] += max(0, high - offset)
        return lag

    def sync_metrics(self) -> None:
        """Report what the counts gained since the last call."""
        m = self.metrics
        if m is None:
            return
        for key, delta in gained(self.counts, self._synced):
            kind, _, name = key.partition(":")
            if kind == "out":
                m.events_produced.labels(name).inc(delta)


class _Rebalance(ConsumerRebalanceListener):
    """Keeps the stage's partitions those the group gives it. aiokafka awaits both
    before the group goes on: revoked before it rebalances, assigned after."""

    def __init__(self, stage: KeyByTrace) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.stage.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.stage.assigned(assigned)
