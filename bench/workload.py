"""The pipeline benchmark's input: issue 13's workload, and the two forms it is sent in.

The workload (:func:`issue_workload`): T traces and T feedback events over 20
projects x 2 environments x 5 models x 8 capabilities. Exactly 2% of the
feedback are orphans (their trace is never sent) and exactly 5% are sent before
their trace (the trace follows 500-3,000 pairs later). Event times run in
order over the ten minutes that end two minutes before the run, so every
one-minute rate window is complete (watermark past it) once the stream has read
the input; all times are within the ingest bounds.

The forms (:func:`fill_batched`, :func:`fill_single`):

- ``batched``: as thumbline's SDK sends them (``FeedbackProducer.send_many``):
  JSON arrays per partition, on thumbline's murmur2 partition of the trace id;
- ``single``: one JSON object per message, keyed by trace id, sent by a foreign
  client (confluent-kafka, librdkafka's default ``consistent_random``
  partitioner: CRC32 of the key), so most events sit on another partition than
  thumbline's.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from thumbline.producers import FeedbackProducer
from thumbline.producers.loadgen import LoadGenerator, LoadSpec
from thumbline.schemas import FeedbackEvent, Topics, TraceEvent
from thumbline.schemas.topics import partition_for
from thumbline.schemas.wire import encode_event

PARTITIONS = 8
ORPHAN_SHARE = 0.02
EARLY_SHARE = 0.05
EARLY_AFTER = (500, 3000)  # pairs between an early feedback and its trace
SPAN_SECONDS = 600.0  # event times, in order over this span...
ENDS_BEFORE_SECONDS = 120.0  # ...ending this long before the workload is built
CHUNK = 5000  # events per send_many call


@dataclass(slots=True)
class Workload:
    """Events in send order, and exactly what they hold."""

    events: list[TraceEvent | FeedbackEvent] = field(default_factory=list)
    feedback: int = 0
    traces: int = 0
    orphans: int = 0
    early: int = 0

    @property
    def joined(self) -> int:
        return self.feedback - self.orphans


def issue_workload(t: int, *, seed: int = 13, run_id: str = "bench") -> Workload:
    """T feedback events and their traces (see the module docstring); reproducible by seed."""
    spec = LoadSpec(
        seed=seed, run_id=run_id, projects=20, environments=2, models=5, capabilities=8,
        comment_share=0.3,
    )  # fmt: skip
    gen = LoadGenerator(spec)
    rng = random.Random(seed)
    picks = rng.sample(range(t), round(t * (ORPHAN_SHARE + EARLY_SHARE)))
    orphans = set(picks[: round(t * ORPHAN_SHARE)])
    early = set(picks[round(t * ORPHAN_SHARE) :])
    end = datetime.now(UTC) - timedelta(seconds=ENDS_BEFORE_SECONDS)
    start = end - timedelta(seconds=SPAN_SECONDS)
    step = SPAN_SECONDS / max(t, 1)
    work = Workload(feedback=t, traces=t - len(orphans), orphans=len(orphans), early=len(early))
    deferred: dict[int, list[TraceEvent]] = {}  # pair index -> traces sent after it
    for i in range(t):
        trace, feedback, _ = gen.pair(0.0)  # shares project, user and session with its trace
        began = start + timedelta(seconds=i * step)
        answered = began + timedelta(milliseconds=trace.latency_ms or 0.0)
        said = answered + timedelta(seconds=rng.uniform(1.0, 30.0))
        trace = trace.model_copy(
            update={"start_time": began, "end_time": answered, "received_at": answered}
        )
        feedback = feedback.model_copy(update={"ts": said, "received_at": said})
        if i in early:
            deferred.setdefault(i + rng.randint(*EARLY_AFTER), []).append(trace)
        elif i not in orphans:
            work.events.append(trace)
        work.events.append(feedback)
        work.events.extend(deferred.pop(i, ()))
    for i in sorted(deferred):  # the early feedback of the last pairs
        work.events.extend(deferred[i])
    assert sum(isinstance(e, TraceEvent) for e in work.events) == work.traces
    return work


async def fill_batched(bootstrap: str, prefix: str, work: Workload) -> None:
    """Send the workload as the SDK does: JSON arrays per murmur2 partition."""
    async with FeedbackProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as fb:
        for start in range(0, len(work.events), CHUNK):
            await fb.send_many(work.events[start : start + CHUNK])


def fill_single(bootstrap: str, prefix: str, work: Workload) -> dict[str, int]:
    """Send the workload as a foreign producer would: one JSON object per message, keyed
    by trace id, on librdkafka's default partition (CRC32 of the key, ``consistent_random``).

    Checks every delivered message's partition against ``zlib.crc32(key) % partitions``.

    Returns:
        ``messages`` sent, ``not_crc32`` (partitions that differ from CRC32: 0), and
        ``off_murmur2`` (messages not on thumbline's murmur2 partition of their trace id).
    """
    from confluent_kafka import Producer

    topics = Topics.build(prefix, PARTITIONS)
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "compression.type": "lz4",  # as the SDK
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "batch.size": 4 * 1024 * 1024,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1024 * 1024,
        # no "partitioner": librdkafka's default, consistent_random, is the point
    })  # fmt: skip
    errors: list[str] = []
    seen = {"messages": 0, "not_crc32": 0, "off_murmur2": 0}

    def delivered(error: object, message: object) -> None:
        if error is not None:
            errors.append(str(error))
            return
        key: bytes = message.key()  # type: ignore[attr-defined]
        partition: int = message.partition()  # type: ignore[attr-defined]
        seen["messages"] += 1
        seen["not_crc32"] += partition != zlib.crc32(key) % PARTITIONS
        seen["off_murmur2"] += partition != partition_for(key.decode(), PARTITIONS)

    for event in work.events:
        topic = topics.traces.name if isinstance(event, TraceEvent) else topics.feedback.name
        while True:
            try:
                producer.produce(
                    topic, encode_event(event), key=event.trace_id.encode(), on_delivery=delivered
                )
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(120)
    if errors or left:
        raise RuntimeError(f"single fill: {left} unsent, errors {errors[:3]}")
    return seen


def legacy_workload(t: int, *, early: float = 0.1, seed: int = 42) -> Workload:
    """The bench's earlier input (``--workload legacy``): 3 projects x 2 environments x
    4 models x 3 capabilities, no orphans, a share ``early`` of the traces sent at the
    end of their 5,000-pair chunk, event times at generation."""
    gen = LoadGenerator(LoadSpec(seed=seed, run_id="legacy", comment_share=0.3))
    work = Workload(feedback=t, traces=t)
    for start in range(0, t, CHUNK):
        late: list[TraceEvent] = []
        for _ in range(min(CHUNK, t - start)):
            trace, feedback, _ = gen.pair(0.0)
            if gen.rng.random() < early:
                late.append(trace)
                work.early += 1
            else:
                work.events.append(trace)
            work.events.append(feedback)
        work.events.extend(late)
    return work
