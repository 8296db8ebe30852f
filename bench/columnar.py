"""The join's hot path today against a columnar prototype of it, in process (issue 13's lever).

Issue 13's workload (``bench/workload.py``) is sent as one JSON object per input
message (the ``single`` form: CRC32 partitions), and key_by_trace's own
``route`` turns each batch of ``--per-batch`` input messages into keyed
messages (one per partition of ``keyed``, a few hundred events each). Both
paths then take the same micro-batches (one per routed batch), no broker:

- **current**: ``DecodeInput`` + ``JoinState`` + the rows encoded as the join's
  ``JoinOutput.emit`` encodes them (``trace_record``, ``feedback_record``, ``json_arrays``
  into a ``ClickHouseSink``); insert: ``ClickHouseSink.write`` (JSONEachRow);
- **prototype** (``bench/columnar_join.py``): one ``orjson.loads`` per message,
  checks per column, a compact join state, rows as columns; encode: one
  columnar JSON message per partition for Kafka and the insert's columns;
  insert: ``client.insert(column_oriented=True)`` and ``insert_arrow``.

Feedback still waiting after the input is read becomes orphans (the grace is
skipped on a fake clock) on both paths. Every step is timed best of
``--repeat`` in CPU seconds of the thread (``thread_time``: the machine is shared,
and wall time there measures the neighbours), inserts in wall and in CPU seconds
of the process (chDB's threads included), and the two paths' rows are compared, in Python
and as stored in chDB (``FINAL``, every column); any difference fails the run.

    python bench/columnar.py --feedback 50000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from columnar_join import OUT, TR, ColumnarJoin
from common import git_commit
from workload import PARTITIONS, issue_workload

from thumbline.schemas import TimeBounds, Topics, TraceEvent, partition_for
from thumbline.store import apply_migrations
from thumbline.stream_jobs.decode_input import Batch, DecodeInput
from thumbline.stream_jobs.join_state import JoinState, key_of
from thumbline.stream_jobs.keyed_messages import route
from thumbline.stream_jobs.sink import (
    JSON_SETTINGS,
    ClickHouseSink,
    SinkBatch,
    feedback_record,
    json_arrays,
)

STEPS = ("decode+validate", "join", "encode", "insert")


@dataclass(slots=True)
class Record:
    """What key_by_trace reads and the join's decoder is given (aiokafka's / Faust's fields)."""

    topic: str
    partition: int
    offset: int
    timestamp: Any  # ms for an input record; seconds (Faust) for a keyed message
    key: bytes | None
    value: bytes


def input_records(feedback: int, topics: Topics) -> list[Record]:
    """The workload in the ``single`` form: one JSON object per message, CRC32 partitions."""
    work = issue_workload(feedback)
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    now_ms = int(time.time() * 1000)
    records = []
    for event in work.events:
        topic = topics.traces.name if isinstance(event, TraceEvent) else topics.feedback.name
        key = event.trace_id.encode()
        partition = zlib.crc32(key) % PARTITIONS  # librdkafka's default partitioner
        offset = offsets[topic, partition]
        offsets[topic, partition] += 1
        records.append(Record(topic, partition, offset, now_ms, key, event.to_json()))
    return records


def keyed_batches(records: list[Record], per_batch: int, topics: Topics) -> list[list[Record]]:
    """Input records as key_by_trace's ``route`` publishes them: one list of keyed
    messages per routed batch (what the join then takes as one micro-batch)."""
    batches: list[list[Record]] = []
    offsets: dict[int, int] = defaultdict(int)
    for start in range(0, len(records), per_batch):
        routed = route(topics, records[start : start + per_batch])
        batch = []
        for p, values in sorted(routed.items()):
            for value in values:
                sent = records[start].timestamp / 1000  # Faust gives seconds
                batch.append(Record(topics.keyed.name, p, offsets[p], sent, None, value))
                offsets[p] += 1
        batches.append(batch)
    return batches


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# current --------------------------------------------------------------------------


def run_current(batches: list[list[Record]], topics: Topics, client: Any, database: str) -> dict:
    """The join as ``JoinTracesJob.handle`` and ``JoinOutput.emit`` do it, step by step;
    rows kept."""
    clock, counts = Clock(), defaultdict[str, int](int)
    decoder = DecodeInput(topics, TimeBounds(), counts)
    state = JoinState(clock=clock)
    sink = ClickHouseSink(client, database, max_rows=10**9)
    took = dict.fromkeys(STEPS, 0.0)
    rows_out: list[Any] = []
    traces_out: list[Any] = []
    dead: list[Any] = []
    for i, messages in enumerate([*batches, []]):
        t0 = time.thread_time()
        batch = Batch()
        for message in messages:
            decoder.decode(message, None, batch)
        t1 = time.thread_time()
        if i == len(batches):  # the input is read: the grace ends for what still waits
            clock.now += 3600
            rows = state.expire(lambda keys: {})
        else:
            rows = state.add_traces(batch.traces)
            unknown = {
                k for items, _ in batch.feedback for e in items
                if (k := key_of(e)) not in state.traces and k not in state.pending
            }  # fmt: skip
            state.add_known_traces({})  # the store holds none of them (lookup({}) in the bench)
            del unknown
            for items, held in batch.feedback:
                rows.extend(state.add_feedback(items, refs=[held] * len(items)))
            state.take_released()
        t2 = time.thread_time()
        for row in rows:
            counts[str(row.join_status)] += 1
        sink.add_traces(batch.traces)
        sink.add_dead_letters(batch.dead)
        by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_partition[partition_for(row.trace_id, topics.feedback.partitions)].append(
                feedback_record(row)
            )
        for _partition, records in by_partition.items():
            for array, count in json_arrays(records):
                sink.add_array("feedback", array, count)  # and the same bytes to Kafka
        t3 = time.thread_time()
        if batch.forward:
            raise AssertionError("key_by_trace put every event on its trace's partition")
        took["decode+validate"] += t1 - t0
        took["join"] += t2 - t1
        took["encode"] += t3 - t2
        rows_out.extend(rows)
        traces_out.extend(batch.traces)
        dead.extend(batch.dead)
    return {"took": took, "rows": rows_out, "traces": traces_out, "sink": sink.detach(),
            "counts": counts,
            "dead": dead}  # fmt: skip


class GilProbe:
    """How much of the interpreter an insert leaves to other Python threads.

    The stream inserts in a thread while its main thread decodes the next
    micro-batch; what counts against the main thread is the time the insert
    holds the GIL. A thread counting in a loop measures it: its rate during the
    insert against its rate alone gives the share of the GIL the insert took.
    """

    def __init__(self) -> None:
        self.count = 0
        self.stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        time.sleep(0.05)
        self.idle = self._rate(lambda: time.sleep(0.5))[1]

    def _spin(self) -> None:
        while not self.stop:
            self.count += 1

    def _rate(self, fn: Callable[[], Any]) -> tuple[float, float]:
        before, t0 = self.count, time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        return took, (self.count - before) / took

    def held(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """(seconds fn took, seconds of them it held the GIL, as the probe saw it)."""
        took, rate = self._rate(fn)
        return took, took * max(0.0, 1 - rate / self.idle)

    def close(self) -> None:
        self.stop = True
        self.thread.join()


def insert_current(client: Any, batch: SinkBatch, database: str) -> tuple[str, Callable]:
    """The sink's write of what the run buffered (JSONEachRow), into ``database``."""
    sink = ClickHouseSink(client, database)
    copy = SinkBatch({t: list(c) for t, c in batch.tables.items()}, dict(batch.rows))
    return database, lambda: sink.write(copy)


# prototype ------------------------------------------------------------------------


def run_prototype(batches: list[list[Record]], topics: Topics) -> dict:
    clock = Clock()
    join = ColumnarJoin(topics, clock=clock)
    took = dict.fromkeys(STEPS, 0.0)
    kafka: list[bytes] = []  # enriched feedback, one columnar JSON per partition and batch
    traces: list[bytes] = []  # trace rows, one columnar JSON per batch
    sizes = done = 0
    for i, messages in enumerate([*batches, []]):
        t0 = time.thread_time()
        decoded = [(m.partition, *join.decode(m)) for m in messages]
        t1 = time.thread_time()
        if i == len(batches):
            clock.now += 3600
            join.expire()
        else:
            join.join(decoded)
        t2 = time.thread_time()
        # Kafka: one columnar message per partition of the rows this micro-batch made
        out = join.feedback
        start, parts = sizes, out["partition"][sizes:]
        for p in sorted(set(parts)):
            pick = [start + j for j, q in enumerate(parts) if q == p]
            kafka.append(orjson.dumps({f: [out[f][j] for j in pick] for f in OUT}))
        sizes = len(parts) + start
        tr = join.traces
        if len(tr["trace_id"]) > done:
            traces.append(orjson.dumps({f: tr[f][done:] for f in TR}))
            done = len(tr["trace_id"])
        t3 = time.thread_time()
        took["decode+validate"] += t1 - t0
        took["join"] += t2 - t1
        took["encode"] += t3 - t2
    return {"took": took, "join": join, "kafka": kafka, "traces": traces}


def insert_columns(join: ColumnarJoin) -> dict[str, list[list[Any]]]:
    """The output columns as the ``feedback`` and ``traces`` tables take them."""
    fb, tr = join.feedback, join.traces
    texts: dict[Any, str] = {}

    def text(v: Any) -> str:  # the value column: as JSONEachRow reads numbers as strings
        if v is None:
            return ""
        t = texts.get((type(v), v))
        if t is None:
            t = texts[(type(v), v)] = v if type(v) is str else orjson.dumps(v).decode()
        return t

    def blank(column: list[Any]) -> list[Any]:
        return [v if v is not None else "" for v in column]

    def dump(column: list[Any]) -> list[str]:
        return [orjson.dumps(v).decode() if v else "{}" for v in column]

    f = {name: fb[name] for name in OUT}
    for name in ("span_id", "comment", "correction", "category", "user_id", "session_id",
                 "conversation_id", "capability", "step", "trace_name",
                 "trace_status"):  # fmt: skip
        f[name] = blank(f[name])
    f["value"] = [text(v) for v in fb["value"]]
    f["metadata"] = dump(fb["metadata"])
    f["retracted"] = [int(v) for v in fb["retracted"]]
    t = {name: tr[name] for name in TR}
    for name in ("span_id", "parent_span_id", "name", "model", "capability", "step", "user_id",
                 "session_id", "conversation_id", "error"):  # fmt: skip
        t[name] = blank(t[name])
    t["attributes"] = dump(tr["attributes"])
    return {"feedback": [f[n] for n in OUT], "traces": [t[n] for n in TR]}


def insert_prototype(client: Any, database: str, proto: dict, how: str) -> tuple[str, Callable]:
    """The prototype's insert, as a call, into ``database``.

    ``jsoncolumns``: the very bytes the encode step made (the feedback's are what
    goes to Kafka), parsed by ClickHouse (format JSONColumns, the sink's settings);
    ``column``: ``client.insert(column_oriented=True)`` of the columns converted to
    the tables' types (the conversion counts); ``arrow``: the same columns as Arrow
    tables (building them counts), ``insert_arrow``.
    """

    def run() -> None:
        if how == "jsoncolumns":
            for table, blocks in (("feedback", proto["kafka"]), ("traces", proto["traces"])):
                client.raw_insert(f"{database}.{table}", insert_block=b"\n".join(blocks),
                                  settings=JSON_SETTINGS, fmt="JSONColumns")  # fmt: skip
            return
        columns = insert_columns(proto["join"])
        for table, names in (("feedback", OUT), ("traces", TR)):
            if how == "arrow":
                import pyarrow as pa  # type: ignore[import-untyped]

                arrow = pa.table(dict(zip(names, columns[table], strict=True)))
                client.insert_arrow(f"{database}.{table}", arrow)
            else:
                client.insert(f"{database}.{table}", columns[table], column_names=list(names),
                              column_oriented=True)  # fmt: skip

    return database, run


# checks ---------------------------------------------------------------------------


def _norm(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(v)
    if isinstance(v, dict):
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS)
    if isinstance(v, str):
        return str(v)  # StrEnum members as their text
    return v


def same_rows(current: dict, proto: dict) -> None:
    """Fail unless both paths made the same rows (as sets, every field)."""
    rows = sorted(tuple(_norm(r.__dict__[f]) for f in OUT) for r in current["rows"])
    fb = proto["join"].feedback
    mine = sorted(tuple(_norm(v) for v in row) for row in zip(*(fb[f] for f in OUT), strict=True))
    if rows != mine:
        diff = next((a, b) for a, b in zip(rows, mine, strict=False) if a != b)
        raise AssertionError(f"feedback rows differ ({len(rows)} against {len(mine)}): {diff}")

    def where(letter: Any) -> tuple[Any, ...]:
        d = letter if isinstance(letter, dict) else letter.__dict__
        return (d["topic"], d["partition"], d["offset"], d["batch_index"], d["reason"])

    dead, mine_dead = sorted(map(where, current["dead"])), sorted(map(where, proto["join"].dead))
    if dead != mine_dead:
        raise AssertionError(f"dead letters differ: {dead} against {mine_dead}")
    from thumbline.stream_jobs.sink import trace_record

    traces = sorted(tuple(_norm(trace_record(t)[f]) for f in TR) for t in current["traces"])
    tr = proto["join"].traces
    mine = sorted(tuple(_norm(v) for v in row) for row in zip(*(tr[f] for f in TR), strict=True))
    if traces != mine:
        diff = next((a, b) for a, b in zip(traces, mine, strict=False) if a != b)
        raise AssertionError(f"trace rows differ ({len(traces)} against {len(mine)}): {diff}")


def same_tables(client: Any, a: str, b: str) -> int:
    """Fail unless two databases' feedback and traces tables hold the same rows."""
    n = 0
    for table, names, order in (("feedback", OUT, "event_id"), ("traces", TR, "trace_id, span_id")):
        sql = f"SELECT {', '.join(names)} FROM {{db}}.{table} FINAL ORDER BY {order}"
        left = client.query(sql.format(db=a)).result_rows
        right = client.query(sql.format(db=b)).result_rows
        if left != right:
            diff = next((x, y) for x, y in zip(left, right, strict=False) if x != y)
            raise AssertionError(f"{a}.{table} and {b}.{table} differ: {diff}")
        n += len(left)
    return n


# main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feedback", type=int, default=50_000)
    parser.add_argument("--per-batch", type=int, default=4000, help="input messages per route")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--gil", action="store_true", help="also the GIL each insert holds (a probe thread; "
        "only on an idle machine: under load it reads noise)",
    )  # fmt: skip
    args = parser.parse_args()
    topics = Topics.build("bench.", PARTITIONS)
    batches = keyed_batches(input_records(args.feedback, topics), args.per_batch, topics)
    messages = [m for b in batches for m in b]
    sizes = [len(orjson.loads(m.value)["feedback"]) + len(orjson.loads(m.value)["traces"])
             for m in messages]  # fmt: skip
    print(
        f"{args.feedback} feedback, {sum(sizes)} events in {len(messages)} keyed messages "
        f"({min(sizes)}-{max(sizes)} events each), {len(batches)} micro-batches"
    )

    with tempfile.TemporaryDirectory() as folder:
        client = clickhouse_connect.get_client(dsn=f"chdb://{folder}/store")
        inserts: dict[str, list[float]] = defaultdict(list)
        steps: dict[str, list[dict[str, float]]] = defaultdict(list)
        current: dict[str, Any] = {}
        proto: dict[str, Any] = {}
        stored = 0
        for r in range(args.repeat):
            gc.collect()
            current = run_current(batches, topics, client, f"cur{r}")
            gc.collect()
            proto = run_prototype(batches, topics)
            if r == 0:
                same_rows(current, proto)  # fails loudly on any difference
            # each insert twice into fresh tables (a repeated block would be deduplicated):
            # its time alone, then the GIL it holds, with a probe thread running
            for probed in (False, True) if args.gil else (False,):
                tag = "g" if probed else ""
                calls = {
                    "current": insert_current(client, current["sink"], f"cur{r}{tag}"),
                    "jsoncolumns": insert_prototype(client, f"jc{r}{tag}", proto, "jsoncolumns"),
                    "column": insert_prototype(client, f"col{r}{tag}", proto, "column"),
                    "arrow": insert_prototype(client, f"arrow{r}{tag}", proto, "arrow"),
                }
                for db, _call in calls.values():
                    apply_migrations(client, db)
                probe = GilProbe() if probed else None  # spinning only while it measures
                for name, (_db, call) in calls.items():
                    if probe is None:
                        t0, c0 = time.perf_counter(), time.process_time()
                        call()
                        inserts[name].append(time.perf_counter() - t0)
                        inserts[f"{name}:cpu"].append(time.process_time() - c0)
                    else:
                        inserts[f"{name}:gil"].append(probe.held(call)[1])
                if probe is not None:
                    probe.close()
                if r == 0 and not probed:
                    stored = same_tables(client, "cur0", "jc0")
                    same_tables(client, "cur0", "col0")
                    same_tables(client, "cur0", "arrow0")
                for db, _call in calls.values():  # no merges of old tables behind the next
                    client.command(f"DROP DATABASE {db} SYNC")
            steps["current"].append(current["took"])
            steps["proto"].append(proto["took"])
        client.close()
    careful = proto["join"].counts["careful"]
    report(args, steps, inserts, stored, len(current["rows"]), current["counts"], careful)


def report(
    args: Any, steps: dict, inserts: dict, stored: int, rows: int, counts: dict, careful: int
) -> None:
    scale = 100_000 / args.feedback
    cur = {s: min(t[s] for t in steps["current"]) * scale for s in STEPS[:3]}
    pro = {s: min(t[s] for t in steps["proto"]) * scale for s in STEPS[:3]}
    ins = {k: min(v) * scale for k, v in inserts.items()}
    p = print
    p(
        f"rows equal: {rows} feedback rows ({dict(counts)}) in Python; "
        f"{careful} events left to the models by the fast checks; "
        f"{stored} rows of feedback and traces stored equal (current, JSONColumns, column, Arrow)"
    )
    p(f"\nseconds per 100,000 feedback with their traces (best of {args.repeat}; steps in"
      " CPU seconds of the thread)\n")  # fmt: skip
    p("| step | current | prototype | current / prototype |")
    p("|---|---:|---:|---:|")

    def line(label: str, c: float, q: float) -> None:
        ratio = f"{c / q:.1f}x" if q > 0.005 else "n/a"
        p(f"| {label} | {c:.2f} | {q:.2f} | {ratio} |")

    for s in STEPS[:3]:
        line(s, cur[s], pro[s])
    hot_c, hot_p = sum(cur.values()), sum(pro.values())
    line("**Python on the main thread (the three above)**", hot_c, hot_p)
    for how, name in (("jsoncolumns", "JSONColumns, the encoded bytes"),
                      ("column", "column-oriented"), ("arrow", "Arrow")):  # fmt: skip
        line(f"insert, wall (prototype: {name})", ins["current"], ins[how])
        line(f"insert, CPU of the process (prototype: {name})", ins["current:cpu"],
             ins[f"{how}:cpu"])  # fmt: skip
    if args.gil:
        for how, name in (("jsoncolumns", "JSONColumns"), ("column", "column-oriented"),
                          ("arrow", "Arrow")):  # fmt: skip
            line(f"insert, of which GIL held ({name})", ins["current:gil"], ins[f"{how}:gil"])
        line("**main thread: Python + the insert's GIL (JSONColumns)**",
             hot_c + ins["current:gil"], hot_p + ins["jsoncolumns:gil"])  # fmt: skip
    line("**CPU: Python + the insert's CPU (JSONColumns)**",
         hot_c + ins["current:cpu"], hot_p + ins["jsoncolumns:cpu"])  # fmt: skip
    p(f"\nPython {platform.python_version()}, commit {git_commit()}")


if __name__ == "__main__":
    main()
