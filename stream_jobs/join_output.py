"""join_output: the join's outcomes written to ClickHouse and Kafka, and its input acknowledged.

The join (:mod:`thumbline.stream_jobs.join_traces`) hands each batch's outcomes
here: traces, enriched feedback and dead letters go to the ClickHouse sink;
enriched feedback and dead letters are published to Kafka, and events on the
wrong partition forwarded to ``keyed``.

Delivery: an input message is acknowledged (its offset may be committed) only
when every event in it is durably somewhere (flushed to ClickHouse, or
acknowledged by Kafka for a forward) and so is every message before it on its
partition. Feedback still waiting for its trace keeps
its message unacknowledged, so a crash replays it; the tables' version keys make
every replay collapse into the rows already there.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from thumbline.kafka import Outgoing, deliver
from thumbline.metrics import Metrics
from thumbline.outages import STORE, Waits
from thumbline.schemas import (
    DeadLetter,
    EnrichedFeedback,
    Topics,
    TraceEvent,
    partition_for,
    rates_partition,
)
from thumbline.stream_jobs.sink import (
    ClickHouseSink,
    SinkBatch,
    SinkUnavailable,
    feedback_record,
    json_arrays,
)
from thumbline.stream_jobs.watermarks import Watermarks


@dataclass(slots=True, eq=False)
class Held:
    """One input message and how many of its events are not yet emitted."""

    event: Any  # the faust Event
    outstanding: int = 0
    durable: bool = False  # every event of it is flushed or acknowledged by Kafka
    settled: bool = False  # every event emitted is flushed (held ones come later, as late rows)


class JoinOutput:
    """Where the join's outcomes go, and when its input messages are acknowledged.

    At most one write to ClickHouse is in flight (:meth:`flush`); messages are
    acknowledged in offset order per partition once every event of them is durable.
    The caller serializes the calls (the join holds its lock around them).

    Args:
        topics: the registry (names and partition counts).
        sink: the ClickHouse sink.
        producer: a started AIOKafkaProducer for enriched, dlq and keyed.
        marks: the join's watermarks (told what is published and what is stored).
        counts: the join's counts, added to here.
        metrics: where insert time and freshness are observed (optional).
        waits: where sends and inserts that wait out an outage report (readiness).
    """

    def __init__(
        self,
        *,
        topics: Topics,
        sink: ClickHouseSink,
        producer: AIOKafkaProducer,
        marks: Watermarks,
        counts: dict[str, int],
        metrics: Metrics | None,
        waits: Waits,
    ) -> None:
        self.topics = topics
        self.partitions = topics.feedback.partitions
        self.sink = sink
        self.producer = producer
        self.marks = marks
        self.counts = counts
        self.metrics = metrics
        self.waits = waits
        self._received: list[float] = []  # received_at of a sample of rows, for freshness
        self._unflushed: list[Held] = []  # complete, waiting for the next flush
        self._since_flush: list[Held] = []  # processed since the last flush began
        self._writing: asyncio.Task[None] | None = None  # the flush in flight
        # Received messages per partition, in offset order. Faust's consumer commits
        # past an unacknowledged message once later offsets are acknowledged (its
        # head-gap check is off by one, and absent before the first commit), so
        # messages are acknowledged strictly in order: a held one holds back the rest.
        self.order: dict[Any, deque[Held]] = defaultdict(deque)

    def hold(self, event: Any) -> Held:
        """Hold ``event``'s message until every event of it is durable.

        Faust's take_events acks each event after the batch; our extra reference keeps
        it uncommitted until it is stored."""
        event.message.incref()
        held = Held(event)
        self.order[event.message.tp].append(held)
        return held

    def processed(self, held: list[Held]) -> None:
        """The messages of a batch went through the join (some may wait for traces)."""
        self._unflushed.extend(h for h in held if h.outstanding == 0)
        self._since_flush.extend(held)

    def release(self, held: Iterable[Held]) -> None:
        """One event of each of ``held`` was emitted or superseded."""
        for message in held:
            message.outstanding -= 1
            if message.outstanding == 0:
                self._unflushed.append(message)

    @property
    def waiting(self) -> bool:
        """Messages wait for a flush to be acknowledged or settled."""
        return bool(self._unflushed or self._since_flush)

    def forget(self, partitions: set[int]) -> None:
        """The messages of ``partitions`` (moved away) are no longer this worker's to
        acknowledge: their next holder replays them."""
        for tp in [tp for tp in self.order if tp.partition in partitions]:
            del self.order[tp]

    async def emit(
        self,
        rows: list[EnrichedFeedback],
        traces: list[TraceEvent],
        dead: list[DeadLetter],
        forward: dict[int, dict[str, list[bytes]]],
    ) -> None:
        """Add a batch's outcomes to the sink and send them to Kafka; returns once Kafka
        has all of it (``forward``: events to move, by partition of ``keyed``)."""
        for row in rows:
            self.counts[str(row.join_status)] += 1
        if self.metrics is not None and rows:
            step = max(1, len(rows) // 50)
            self._received.extend(r.received_at.timestamp() for r in rows[::step] if r.received_at)
        self.sink.add_traces(traces)
        self.sink.add_dead_letters(dead)
        self.counts["traces"] += len(traces)
        self.counts["enriched"] += len(rows)
        self.counts["dead"] += len(dead)
        out: list[Outgoing] = []
        # To the rates partition of the row's project (one worker counts a project's
        # windows), keyed by the join partition it comes from (whose watermark covers it).
        by_partition: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        enriched = self.topics.enriched.partitions
        for row in rows:
            source = partition_for(row.join_key, self.partitions)
            by_partition[(source, rates_partition(row.project, enriched))].append(
                feedback_record(row)
            )
        for (source, partition), records in by_partition.items():
            # the same bytes to Kafka and ClickHouse, encoded once per array
            key = str(source).encode()
            for array, count in json_arrays(records):
                self.sink.add_array("feedback", array, count)
                out.append(Outgoing(self.topics.enriched.name, array, key, partition=partition))
        self.counts[f"out:{self.topics.enriched.name}"] += len(rows)
        self.counts[f"out:{self.topics.dlq.name}"] += len(dead)
        for letter in dead:
            out.append(Outgoing(self.topics.dlq.name, letter.to_json()))
        for partition, groups in forward.items():
            self.counts["forwarded"] += sum(len(v) for v in groups.values())
            self.counts[f"out:{self.topics.keyed.name}"] += sum(len(v) for v in groups.values())
            value = (
                b'{"feedback":[' + b",".join(groups["feedback"]) + b'],"traces":['
                + b",".join(groups["traces"]) + b"]}"
            )  # fmt: skip
            out.append(Outgoing(self.topics.keyed.name, value, partition=partition))
        # Held under the lock until Kafka has all of it: while the broker does not
        # answer, the join takes no new input (Kafka keeps it) and drops nothing.
        sent = await deliver(self.producer, out, waits=self.waits, operation="join_publish")
        self.marks.published(  # rows a marker may certify once they are flushed
            meta for message, meta in zip(out, sent, strict=True)
            if message.topic == self.topics.enriched.name
        )  # fmt: skip

    async def flush(self) -> None:
        """Start writing what the sink holds; at most one write is in flight.

        The write runs in a thread while the next micro-batch is processed
        (ClickHouse parses the rows off the GIL). Waiting for the previous write
        first keeps acknowledgements in order and is the back-pressure: while
        ClickHouse is down, that write retries and the stream takes no input.
        """
        await self.drain()
        if not self.sink.pending and not self._unflushed and not self._since_flush:
            return
        batch, held, received = self.sink.detach(), self._unflushed, self._received
        settled, published = self._since_flush, self.marks.published_so_far()
        self._unflushed, self._received, self._since_flush = [], [], []
        self._writing = asyncio.create_task(self._write(batch, held, received, settled, published))

    async def drain(self) -> None:
        """Wait until the write in flight, if any, is in ClickHouse and acknowledged."""
        if self._writing is not None:
            await self._writing
            self._writing = None

    async def _write(
        self, batch: SinkBatch, held: list[Held], received: list[float],
        settled: list[Held], published: dict[int, int],
    ) -> None:  # fmt: skip
        tables = {table: batch.rows[table] for table in batch.tables}
        while True:
            try:
                began = time.monotonic()
                await asyncio.to_thread(self.sink.write, batch)
                took = time.monotonic() - began
                break
            except SinkUnavailable as exc:
                self.counts["flush_failures"] += 1
                await self.waits.wait(STORE, "join_insert", exc)
        self.waits.succeeded(STORE, "join_insert")
        self.counts["rows_written"] += sum(tables.values())  # over every attempt
        for table, n in tables.items():
            self.counts[f"rows:{table}"] += n
            self.counts[f"batches:{table}"] += 1
        if self.metrics is not None:
            self.metrics.insert_seconds.observe(took)
            now = time.time()
            for at in received:
                self.metrics.freshness.observe(max(0.0, now - at))
        for message in held:
            message.durable = True
        for message in settled:
            message.settled = True
        self.marks.stored(published)
        for queue in self.order.values():
            while queue and queue[0].durable:
                queue.popleft().event.ack()
