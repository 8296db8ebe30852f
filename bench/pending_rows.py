"""What a pending row costs the join: feedback stored while it waits for its trace.

The join writes, for feedback that has waited ``THUMBLINE_JOIN_PENDING_ROW_SECONDS``,
one more row to ``feedback`` (its joined or orphan row replaces it later). This
measures, on a real chDB store and with the join's own code, per feedback event:

- **outcome**: what the join does for every event today: join it with a known
  trace (``JoinState.add_feedback``), encode the row once (``json_arrays``, as
  the join encodes for Kafka and ClickHouse alike) and insert it;
- **pending**: the extra for an event that waits: hold it, ``announce()`` its
  pending row, encode it and insert it.

The extra cost on the hot path is ``pending / outcome`` times the share of
feedback that waits longer than the delay.

    python bench/pending_rows.py --events 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clickhouse_connect

from bench.common import git_commit
from thumbline.schemas import FeedbackEvent, TraceEvent
from thumbline.store import apply_migrations
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.sink import ClickHouseSink, feedback_record, json_arrays

BATCH = 50_000  # THUMBLINE_SINK_MAX_ROWS: rows per insert at most


def events(n: int, run: int) -> tuple[list[TraceEvent], list[FeedbackEvent]]:
    now = datetime.now(UTC)
    traces = [
        TraceEvent.parse({"trace_id": f"r{run}-t{i}", "project": f"project-{i % 20}",
                          "model": f"model-{i % 5}", "capability": f"capability-{i % 8}",
                          "user_id": f"user-{i // 3}", "latency_ms": 812.5})
        for i in range(n)
    ]  # fmt: skip
    feedback = [
        FeedbackEvent.parse({"trace_id": f"r{run}-t{i}", "event_id": f"r{run}-e{i}",
                             "project": f"project-{i % 20}", "kind": "thumb",
                             "value": ("up", "down")[i % 2], "comment": "a comment" * (i % 3),
                             "received_at": now, "ts": now})
        for i in range(n)
    ]  # fmt: skip
    return traces, feedback


def write(sink: ClickHouseSink, rows: list) -> None:
    """Encode and insert ``rows`` as the join does: JSON arrays, one insert per BATCH rows."""
    for start in range(0, len(rows), BATCH):
        records = [feedback_record(r) for r in rows[start : start + BATCH]]
        for array, count in json_arrays(records):
            sink.add_array("feedback", array, count)
        sink.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="pending-bench-")
    client = clickhouse_connect.get_client(dsn=f"chdb://{folder}")
    apply_migrations(client, "bench")
    sink = ClickHouseSink(client, "bench", max_rows=BATCH)
    outcome, pending = [], []
    for run in range(args.repeat):
        traces, feedback = events(args.events, run)
        state = JoinState(pending_row_seconds=0, max_traces=10**8)
        state.add_traces(traces)
        began = time.perf_counter()
        rows = state.add_feedback(feedback)
        write(sink, rows)
        outcome.append((time.perf_counter() - began) / len(rows) * 1e6)

        traces, feedback = events(args.events, run + 1000)
        state = JoinState(pending_row_seconds=0, max_pending=10**8)
        began = time.perf_counter()
        assert state.add_feedback(feedback) == []
        held = time.perf_counter() - began  # today's cost too: every waiting event is held
        began = time.perf_counter()
        rows = state.announce()
        write(sink, rows)
        pending.append((time.perf_counter() - began) / len(rows) * 1e6)
        holding = held / len(rows) * 1e6
        print(f"run {run + 1}: outcome {outcome[-1]:.1f} us/event, pending row "
              f"{pending[-1]:.1f} us/event (holding it, as today: {holding:.1f})")  # fmt: skip
    o, p = statistics.median(outcome), statistics.median(pending)
    print(f"commit {git_commit()}, {args.events} events x {args.repeat}: median outcome "
          f"{o:.1f} us, pending row {p:.1f} us ({p / o:.2f}x an outcome row)")  # fmt: skip
    client.close()


if __name__ == "__main__":
    main()
