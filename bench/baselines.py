"""The pipeline bench's baselines: what thumbline's join must beat.

- ``aiokafka_job``: the job one would write by hand in an afternoon. One
  ``AIOKafkaConsumer`` in a consumer group, a ``getmany()`` loop, orjson, the
  project's pydantic schemas for validation and labels, a dict join by
  (project, trace_id), tumbling 60 s windows of bad feedback per (project,
  model) in a dict, inserts of 1,000 rows into chDB with clickhouse-connect,
  offsets committed after the inserts. No bounds on its dicts, no dead letters.
- ``per_event``: the straightforward faust-streaming join: one event at a time,
  trace attributes in a Faust Table, waiting feedback in a dict, rows inserted
  1,000 at a time.

Both write feedback still waiting for its trace after the grace as an orphan
(empty trace attributes), and a corrected row if the trace comes after all.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from checks import RunSpec, note_first_message, own_rates, wait_rows

from thumbline.schemas import FeedbackEvent, Topics, TraceEvent
from thumbline.settings import load_settings
from thumbline.store import apply_migrations, open_client

PARTITIONS = 8
INSERT_ROWS = 1000
FLUSH_SECONDS = 0.5
WINDOW = 60

# the hand-written job ---------------------------------------------------------------

DB = "bench"
COLUMNS = [
    "event_id", "trace_id", "project", "environment", "model", "capability", "kind", "name",
    "label", "score", "comment", "user_id", "latency_ms", "cost_usd", "total_tokens", "ts",
    "join_status", "version",
]  # fmt: skip
DDL = (
    f"""CREATE TABLE IF NOT EXISTS {DB}.aiokafka_feedback (
        event_id String, trace_id String, project String, environment String, model String,
        capability String, kind String, name String, label String, score Nullable(Float64),
        comment String, user_id String, latency_ms Nullable(Float64), cost_usd Nullable(Float64),
        total_tokens Nullable(UInt64), ts DateTime64(3, 'UTC'), join_status String, version UInt8,
        inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (project, event_id)""",
    f"""CREATE TABLE IF NOT EXISTS {DB}.aiokafka_rates (
        project String, model String, window_start DateTime('UTC'), bad UInt64, total UInt64,
        version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (project, model, window_start)""",
)
VERSION = {"orphan": 1, "joined": 2, "corrected": 3}  # a later status replaces an earlier one

Key = tuple[str, str]  # (project, trace_id)


class AiokafkaJob:
    """Join, count, insert, commit: the whole job, on one consumer."""

    def __init__(self, client: Any, grace: float) -> None:
        self.client = client
        self.grace = grace
        self.traces: dict[Key, TraceEvent] = {}
        # feedback waiting for its trace: since when, and each event with where it was read
        self.pending: dict[Key, tuple[float, list[tuple[FeedbackEvent, Any, int]]]] = {}
        self.orphaned: dict[Key, list[FeedbackEvent]] = {}  # written as orphans, correctable
        self.windows: dict[tuple[str, str, int], list[int]] = {}  # (project, model, start): bad, n
        self.dirty: set[tuple[str, str, int]] = set()
        self.rows: list[list[Any]] = []
        self.read: dict[Any, int] = {}  # partition -> next offset

    async def run(self, consumer: Any, stop: asyncio.Event, traces_topic: str) -> None:
        flushed = time.monotonic()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if batch:
                note_first_message()
            for tp, messages in batch.items():
                is_trace = tp.topic == traces_topic
                for m in messages:
                    data = orjson.loads(m.value)
                    for item in data if isinstance(data, list) else [data]:
                        if is_trace:
                            self.on_trace(TraceEvent.parse(item))
                        else:
                            self.on_feedback(FeedbackEvent.parse(item), tp, m.offset)
                self.read[tp] = messages[-1].offset + 1
            self.expire(time.monotonic())
            now = time.monotonic()
            if len(self.rows) >= INSERT_ROWS or (now - flushed >= FLUSH_SECONDS and self.read):
                await self.flush(consumer)
                flushed = now
        await self.flush(consumer)

    def on_trace(self, trace: TraceEvent) -> None:
        key = (trace.project, trace.trace_id)
        self.traces[key] = trace
        _, waiting = self.pending.pop(key, (0.0, []))
        for feedback, _, _ in waiting:
            self.emit(feedback, trace, "joined")
        for feedback in self.orphaned.pop(key, ()):
            self.count(feedback, "", -1)
            self.emit(feedback, trace, "corrected")

    def on_feedback(self, feedback: FeedbackEvent, tp: Any, offset: int) -> None:
        key = (feedback.project, feedback.trace_id)
        trace = self.traces.get(key)
        if trace is not None:
            self.emit(feedback, trace, "joined")
        else:
            self.pending.setdefault(key, (time.monotonic(), []))[1].append((feedback, tp, offset))

    def expire(self, now: float) -> None:
        """Feedback that waited longer than the grace is written as an orphan."""
        while self.pending:
            key, (since, waiting) = next(iter(self.pending.items()))  # oldest first
            if now - since < self.grace:
                break
            del self.pending[key]
            for feedback, _, _ in waiting:
                self.emit(feedback, None, "orphan")
                self.orphaned.setdefault(key, []).append(feedback)

    def emit(self, f: FeedbackEvent, t: TraceEvent | None, status: str) -> None:
        model = (t.model or "") if t else ""
        self.rows.append([
            f.event_id, f.trace_id, f.project, f.environment or (t and t.environment) or "",
            model, f.capability or (t and t.capability) or "", str(f.kind or ""), f.name or "",
            f.label or "", f.score, f.comment or "", f.user_id or "",
            t.latency_ms if t else None, t.cost_usd if t else None,
            t.total_tokens if t else None, f.ts, status, VERSION[status],
        ])  # fmt: skip
        self.count(f, model, 1)

    def count(self, f: FeedbackEvent, model: str, sign: int) -> None:
        key = (f.project, model, int(f.ts.timestamp()) // WINDOW * WINDOW)
        cell = self.windows.setdefault(key, [0, 0])
        cell[0] += sign * (f.label == "bad")
        cell[1] += sign
        self.dirty.add(key)

    async def flush(self, consumer: Any) -> None:
        """Insert the rows (1,000 at a time), then the changed windows, then commit what
        is stored: never past feedback still waiting for its trace."""
        rows, self.rows = self.rows, []
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            await asyncio.to_thread(
                self.client.insert, f"{DB}.aiokafka_feedback", chunk, column_names=COLUMNS
            )
        if self.dirty:
            version = time.time_ns()
            windows = [
                [p, m, datetime.fromtimestamp(s, UTC), *self.windows[(p, m, s)], version]
                for p, m, s in self.dirty
            ]
            self.dirty = set()
            await asyncio.to_thread(
                self.client.insert, f"{DB}.aiokafka_rates", windows,
                column_names=["project", "model", "window_start", "bad", "total", "version"],
            )  # fmt: skip
        offsets = dict(self.read)
        for _, waiting in self.pending.values():
            for _, tp, offset in waiting:
                offsets[tp] = min(offsets.get(tp, offset), offset)
        if offsets:
            await consumer.commit(offsets)


async def run_aiokafka_job(spec: RunSpec) -> dict:
    import clickhouse_connect
    from aiokafka import AIOKafkaConsumer

    dsn = f"chdb://{tempfile.mkdtemp(prefix='bench-ak-')}/store"
    client = clickhouse_connect.get_client(dsn=dsn)  # the job's writer
    poll = clickhouse_connect.get_client(dsn=dsn)  # the bench's reader (a client per thread)
    client.command(f"CREATE DATABASE IF NOT EXISTS {DB}")
    for ddl in DDL:
        client.command(ddl)
    topics = Topics.build(spec.prefix, PARTITIONS)
    consumer = AIOKafkaConsumer(
        topics.feedback.name, topics.traces.name, bootstrap_servers=spec.bootstrap,
        group_id=spec.group, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    job = AiokafkaJob(client, spec.grace)
    stop = asyncio.Event()
    started = time.perf_counter()
    await consumer.start()
    running = asyncio.create_task(job.run(consumer, stop, topics.traces.name))
    waiting = asyncio.create_task(
        wait_rows(poll, DB, spec.n, spec.orphans, started, spec.budget, table="aiokafka_feedback")
    )
    await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
    if running.done():  # the job failed: say why
        waiting.cancel()
        running.result()
    result = waiting.result()
    result.update(await own_rates(poll, DB, "aiokafka_feedback", "aiokafka_rates"))
    stop.set()
    await running
    await consumer.stop()
    return result


# the per-event Faust baseline ---------------------------------------------------------


async def run_per_event(spec: RunSpec) -> dict:
    import faust

    from thumbline.schemas import JoinStatus
    from thumbline.stream_jobs.enriched_rows import TraceAttributes, enrich
    from thumbline.stream_jobs.sink import ClickHouseSink

    settings = load_settings(
        data_dir=Path(tempfile.mkdtemp(prefix="bench-pe-")), topic_prefix=spec.prefix,
        partitions=PARTITIONS,
    )  # fmt: skip
    db = settings.clickhouse_database
    client = open_client(settings)
    apply_migrations(client, db)
    sink = ClickHouseSink(open_client(settings), db, max_rows=INSERT_ROWS, max_age=FLUSH_SECONDS)
    app = faust.App(
        spec.group, broker=f"kafka://{spec.bootstrap}", datadir=str(settings.data_dir / "faust"),
        store="memory://", autodiscover=False, processing_guarantee="at_least_once",
        broker_session_timeout=6, broker_rebalance_timeout=6, broker_heartbeat_interval=1,
        topic_disable_leader=True, consumer_auto_offset_reset="earliest", web_enabled=False,
        topic_partitions=PARTITIONS,
    )  # fmt: skip
    traces_table = app.Table("traces", partitions=PARTITIONS)
    pending: dict[str, tuple[float, list[FeedbackEvent]]] = {}  # since when, waiting
    orphaned: dict[str, list[FeedbackEvent]] = {}
    topics = Topics.build(spec.prefix, PARTITIONS)
    source = app.topic(topics.feedback.name, topics.traces.name, value_type=bytes,
                       value_serializer="raw")  # fmt: skip

    def attrs_of(data: dict) -> TraceAttributes:
        attrs = TraceAttributes(data["trace_id"])
        attrs.merge(TraceEvent.model_validate(data), 0.0)
        return attrs

    @app.agent(source)
    async def join(stream):  # one event at a time
        async for event in stream.events():
            note_first_message()
            items = orjson.loads(event.value)
            for item in items if isinstance(items, list) else [items]:
                if event.message.topic == topics.traces.name:
                    trace = TraceEvent.parse(item)
                    traces_table[trace.trace_id] = item
                    _, waiting = pending.pop(trace.trace_id, (0.0, []))
                    late = orphaned.pop(trace.trace_id, [])
                    attrs = attrs_of(item) if waiting or late else None
                    sink.add_feedback(enrich(f, attrs, JoinStatus.JOINED) for f in waiting)
                    sink.add_feedback(enrich(f, attrs, JoinStatus.CORRECTED) for f in late)
                    sink.add_traces([trace])
                else:
                    feedback = FeedbackEvent.parse(item)
                    known = traces_table.get(feedback.trace_id)
                    if known is None:
                        since = pending.setdefault(feedback.trace_id, (time.monotonic(), []))
                        since[1].append(feedback)
                    else:
                        sink.add_feedback([enrich(feedback, attrs_of(known), JoinStatus.JOINED)])
                if sink.due():
                    await asyncio.to_thread(sink.flush)

    @app.timer(FLUSH_SECONDS)
    async def flush():
        now = time.monotonic()
        while pending:  # oldest first: feedback past the grace is an orphan
            trace_id, (since, waiting) = next(iter(pending.items()))
            if now - since < spec.grace:
                break
            del pending[trace_id]
            orphaned.setdefault(trace_id, []).extend(waiting)
            sink.add_feedback(enrich(f, None, JoinStatus.ORPHAN) for f in waiting)
        if sink.pending:
            await asyncio.to_thread(sink.flush)

    started = time.perf_counter()
    await app.start()
    result = await wait_rows(client, db, spec.n, spec.orphans, started, spec.budget)
    await app.stop()
    return result
