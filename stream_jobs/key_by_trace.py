"""key_by_trace: every input event re-keyed by its trace id, hundreds to a message, for the join.

    feedback, traces ──► key_by_trace (plain aiokafka) ──► keyed ──► join_traces (Faust)
    otlp_spans ───────┘  (the OpenTelemetry Collector's, read by stream_jobs/read_otlp.py)

Producers in any language send one JSON object per Kafka message and hash keys
their own way (librdkafka: CRC32), so most events arrive on a partition other
than their trace's. Faust pays per message (about 5,000 messages/s on two
cores), which capped the join at that rate for such producers. This stage reads
the input topics with ``getmany`` and, per batch, parses each message once,
finds each event's ``trace_id`` and publishes one message per partition of
``keyed`` (thumbline's murmur2 partitioner) with every event bound there
(``*_from``: runs of events that follow each other in one input message,
``index`` the first one's position in it, and the message's topic when it is
not the kind's own, the OpenTelemetry topic):

    {"feedback": [event, ...], "traces": [event, ...],
     "feedback_from": [[partition, offset, timestamp_ms, key, index, count(, topic)], ...],
     "traces_from": [...], "dead": [dead letter, ...]}

It validates nothing: the join does, once. ``*_from`` say which input message
each run of events came from, so the join stamps, bounds and dead-letters every
event exactly as if it had read it there (same ``received_at`` on a replay, same
coordinates in a dead letter). A message that is not usable as a whole (not
JSON, too large, an empty or too large array) becomes a dead letter here and
travels in ``dead``; events without a string ``trace_id`` go to the partition
their message came from, for the join to dead-letter.

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
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from thumbline.kafka import Outgoing, deliver
from thumbline.metrics import Metrics, gained
from thumbline.outages import KAFKA, WaitAborted, Waits, transient
from thumbline.schemas import (
    DeadLetter,
    Topics,
    WireError,
    decode_message,
    partition_for,
    target_key,
)
from thumbline.schemas.wire import MAX_BATCH_EVENTS
from thumbline.stream_jobs.read_otlp import ReadOtlp
from thumbline.stream_jobs.routed_marks import marker

#: What a commit raises when the group moved the partitions meanwhile (aiokafka wraps the
#: broker's three in CommitFailedError; IllegalStateError: no longer assigned here).
REBALANCED = (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    IllegalStateError,
)

logger = logging.getLogger(__name__)

#: Seconds between two ``routed`` markers.
MARK_EVERY = 1.0
#: Bytes of events in one keyed message, at most (under the producer's request size).
MAX_KEYED_BYTES = 900_000
#: Longest wait for input in one ``getmany``.
POLL_MS = 50
#: Input messages routed per batch, at most.
MAX_RECORDS = 10_000
#: The group's timeouts (ms): a stage that stops heartbeating loses its partitions after
#: SESSION_MS; the embedded broker holds a group's first join for about half of it.
SESSION_MS = 6_000
HEARTBEAT_MS = 2_000


class _Out:
    """What one batch sends to one partition of ``keyed``, split at the size limits."""

    __slots__ = ("count", "done", "events", "runs", "size")

    def __init__(self) -> None:
        self.done: list[bytes] = []
        self._reset()

    def _reset(self) -> None:
        self.events: dict[str, list[bytes]] = {"feedback": [], "traces": []}
        self.runs: dict[str, list[list[Any]]] = {"feedback": [], "traces": []}
        self.size = self.count = 0

    def add(
        self, kind: str, source: list[Any], items: list[bytes], index: int = 0,
        topic: str | None = None,
    ) -> None:  # fmt: skip
        """``items`` of one input message (``source``: partition, offset, ms, key), the
        first of them at ``index`` in it, the others following it there (``topic``: the
        message's, when it is not the kind's own input topic)."""
        for item in items:
            self.add_run(kind, source, item, index, 1, topic)
            index += 1

    def add_run(
        self, kind: str, source: list[Any], chunk: bytes, index: int, n: int,
        topic: str | None = None,
    ) -> None:  # fmt: skip
        """``n`` events of one input message as one comma-separated ``chunk`` of JSON, the
        first at ``index`` in it. A chunk is never split: an input message's array fits."""
        if self.count and (
            self.size + len(chunk) > MAX_KEYED_BYTES or self.count + n > MAX_BATCH_EVENTS
        ):
            self.close()
        runs = self.runs[kind]
        last = runs[-1] if runs else None
        named = [topic] if topic else []
        if (last is not None and last[:4] == source and last[4] + last[5] == index
                and last[6:] == named):  # fmt: skip
            last[5] += n
        else:
            runs.append([*source, index, n, *named])
        self.events[kind].append(chunk)
        self.size += len(chunk)
        self.count += n

    def add_dead(self, letter: bytes) -> None:
        """A dead letter travels alone: its raw text may be as large as a message."""
        self.done.append(_keyed({"feedback": [], "traces": []}, {"feedback": [], "traces": []},
                                [letter]))  # fmt: skip

    def close(self) -> None:
        if self.count:
            self.done.append(_keyed(self.events, self.runs, []))
        self._reset()

    def messages(self) -> list[bytes]:
        self.close()
        return self.done


def _keyed(
    events: dict[str, list[bytes]], runs: dict[str, list[list[Any]]], dead: list[bytes]
) -> bytes:
    return (
        b'{"feedback":[' + b",".join(events["feedback"])
        + b'],"traces":[' + b",".join(events["traces"])
        + b'],"feedback_from":' + orjson.dumps(runs["feedback"])
        + b',"traces_from":' + orjson.dumps(runs["traces"])
        + b',"dead":[' + b",".join(dead) + b"]}"
    )  # fmt: skip


def route(
    topics: Topics, records: Iterable[Any], *, counts: dict[str, int] | None = None,
    otlp: ReadOtlp | None = None,
) -> dict[int, list[bytes]]:  # fmt: skip
    """The keyed messages for a batch of input records, by partition of ``keyed``
    (``otlp``: how to read the OpenTelemetry topic, when it is an input)."""
    counts = counts if counts is not None else defaultdict(int)
    partitions = topics.keyed.partitions
    outs: dict[int, _Out] = defaultdict(_Out)
    feedback_topic = topics.feedback.name
    for record in records:
        kind = "feedback" if record.topic == feedback_topic else "traces"
        key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else None
        source = [record.partition, record.offset, record.timestamp, key]
        if otlp is not None and record.topic == otlp.topic:
            routed = otlp.route(record, source, outs, partitions, counts)
            counts[f"out:{topics.keyed.name}"] += routed
            continue
        raw = record.value
        try:
            items = decode_message(raw)
        except WireError as exc:
            letter = DeadLetter.model_construct(
                schema_version=1, topic=record.topic, partition=record.partition,
                offset=record.offset, batch_index=-1, reason=exc.reason,
                error=exc.detail[:10_000], key=key, at=_now(),
                raw=(raw or b"")[:1_000_000].decode("utf-8", "replace"),
            )  # fmt: skip
            outs[record.partition % partitions].add_dead(letter.to_json())
            counts["dead"] += 1
            continue
        counts[f"out:{topics.keyed.name}"] += len(items)
        targets = [_target(item, record.partition, partitions) for item in items]
        if len(items) == 1 and raw is not None and raw.lstrip()[:1] == b"{":
            outs[targets[0]].add(kind, source, [raw.strip()])  # the message's own bytes
            continue
        if all(t == targets[0] for t in targets):  # thumbline's producers: the array as sent
            inner = raw.strip()[1:-1]
            outs[targets[0]].add_run(kind, source, inner, 0, len(items))
            continue
        # a mixed array: each target gets its own runs, in the array's order
        for index, (target, item) in enumerate(zip(targets, items, strict=True)):
            outs[target].add(kind, source, [orjson.dumps(item)], index)
    return {p: out.messages() for p, out in outs.items()}


def _target(item: Any, partition: int, partitions: int) -> int:
    """The partition of an event's join key: its trace id, or for feedback on a whole
    conversation or session (no trace id), that conversation's or session's key."""
    if isinstance(item, dict):
        ids = [item.get(k) for k in ("target", "trace_id", "conversation_id", "session_id")]
        if all(v is None or isinstance(v, str) for v in ids) and any(ids[1:]):
            return partition_for(target_key(*ids), partitions)
    return partition % partitions  # invalid: the join dead-letters it wherever it is


def _now() -> datetime:
    return datetime.now(UTC)


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
        self.consumer = consumer or AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=fetch_max_wait_ms,
            session_timeout_ms=SESSION_MS,
            rebalance_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            **(kafka_kwargs or {}),
        )
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
                    starts = await self._starts(new) if new else {}
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

    async def _starts(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where each newly assigned partition starts: the group's commit, else where the
        join's group left it (sought there), else its beginning. Asked of the broker, not
        of the consumer's position: aiokafka may have fetched from it already."""
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            committed = await self.consumer.committed(tp)
            if committed is not None:
                starts[tp] = committed
        missing = [tp for tp in tps if tp not in starts]
        if missing and self._take_over_from is not None:
            taken = await self._take_over(self._take_over_from, missing)
            for tp, offset in taken.items():
                self.consumer.seek(tp, offset)
            starts.update(taken)
            if taken:
                logger.info("key_by_trace starts where the join left %d input partitions",
                            len(taken))  # fmt: skip
        missing = [tp for tp in tps if tp not in starts]
        if missing:
            starts.update(await self.consumer.beginning_offsets(missing))
        return starts

    async def _take_over(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.kafka_kwargs)
        await admin.start()
        try:
            theirs = await admin.list_consumer_group_offsets(group, partitions=tps)
        finally:
            await admin.close()
        return {tp: meta.offset for tp, meta in theirs.items() if tp in tps and meta.offset >= 0}

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
