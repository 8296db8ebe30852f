"""Memory of the join's state per trace: N traces of issue 13's workload held by a JoinState.

Builds the trace events first (as the join receives them: validated models from
JSON), measures the process's RSS and the bytes the traced allocations hold,
then adds the traces to a fresh :class:`thumbline.stream_jobs.join_state.JoinState` and
measures again; the difference over N is the state's cost per trace. The
events are dropped after being added, as the join drops a batch.

    python bench/join_state_size.py --traces 1000000
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from thumbline.schemas import TraceEvent
from thumbline.stream_jobs.join_state import JoinState

CHUNK = 10_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def trace_json(i: int) -> bytes:
    """One whole-trace event of the issue's workload (20 projects, 2 environments, 5 models,
    8 capabilities; a user and a session of their own per few traces)."""
    return orjson.dumps({
        "trace_id": f"trace-{i:012d}-{i * 7919 % 1000003:07d}", "project": f"project-{i % 20}",
        "environment": ("production", "staging")[i % 2], "model": f"model-{i % 5}",
        "capability": f"capability-{i % 8}", "user_id": f"user-{i // 3}",
        "session_id": f"session-{i // 5}", "name": "chat", "latency_ms": 812.5,
        "total_tokens": 900, "cost_usd": 0.0012, "status": "ok",
        "start_time": "2026-11-25T10:00:00Z", "end_time": "2026-11-25T10:00:01Z",
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    args = parser.parse_args()
    state = JoinState(grace_seconds=600, retention_seconds=7 * 86400, max_traces=10**8)
    gc.collect()
    before = rss_mb()
    began = time.perf_counter()
    for start in range(0, args.traces, CHUNK):
        events = [
            TraceEvent.model_validate_json(trace_json(i))
            for i in range(start, min(args.traces, start + CHUNK))
        ]
        state.add_traces(events)
        del events
    took = time.perf_counter() - began
    gc.collect()
    after = rss_mb()
    n = len(state.traces)
    per_trace = (after - before) * 2**20 / n
    print(f"traces held: {n:,}; RSS {before:,.0f} MB before, {after:,.0f} MB after "
          f"({per_trace:,.0f} bytes a trace); {n / took:,.0f} traces/s added")  # fmt: skip


if __name__ == "__main__":
    main()
