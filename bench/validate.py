"""Decode and validation cost of the join's hot path, per event, in microseconds.

Arrays of ``--size`` events (500: what the SDK batches into one message), made
by the load generator and encoded as the producers encode them, validated from
their bytes as ``thumbline.stream_jobs.decode_input`` does: ``TypeAdapter(list[Model])
.validate_json`` (pydantic), and, when msgspec is installed, the prototype of
issue 13 (``fast_prototype.py``: msgspec structs, then the models' own checks and
derivations, then ``Contract.trusted``), with the share of arrays it took rather
than fell back on, after checking that it gives pydantic's events on them. Then
what each stage of the prototype costs, per event.

    python bench/validate.py --size 500 --arrays 20 --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit  # noqa: E402

from thumbline.producers.loadgen import LoadGenerator, LoadSpec  # noqa: E402
from thumbline.schemas import FeedbackEvent, TraceEvent  # noqa: E402


def make_arrays(size: int, arrays: int, seed: int = 1) -> tuple[list[bytes], list[bytes]]:
    """(feedback arrays, trace arrays), each event encoded as the producers do."""
    gen = LoadGenerator(LoadSpec(seed=seed, comment_share=0.3))
    feedback, traces = [], []
    for _ in range(arrays):
        pairs = [gen.pair(0.0) for _ in range(size)]
        feedback.append(_array([f for _, f, _ in pairs]))
        traces.append(_array([t for t, _, _ in pairs]))
    return feedback, traces


def _array(events: list[Any]) -> bytes:
    encoded = [type(e).__pydantic_serializer__.to_json(e, exclude_none=True) for e in events]
    return b"[" + b",".join(encoded) + b"]"


def per_event_us(fn: Callable[[bytes], Any], bodies: list[bytes], size: int, repeat: int) -> float:
    """Best of ``repeat`` runs over every body, in microseconds per event."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for body in bodies:
            fn(body)
        runs.append(time.perf_counter() - start)
    return min(runs) / (len(bodies) * size) * 1e6


def _same(slow: list[Any], quick: list[Any] | None) -> None:
    if quick is None:
        return
    assert [e.model_dump() for e in slow] == [e.model_dump() for e in quick]
    assert [e.to_json() for e in slow] == [e.to_json() for e in quick]


def stages(fast: Any, feedback: list[bytes], traces: list[bytes], size: int) -> None:
    """The prototype's cost per event, stage by stage (best of 5, microseconds)."""
    import msgspec

    def cost(fn: Callable[[], Any], per: int) -> float:
        number = 20 if per > 1 else 10_000
        return min(timeit.repeat(fn, number=number, repeat=5)) / number / per * 1e6

    class Bare(msgspec.Struct):  # the feedback fields, no bounds, times as text
        event_id: str
        trace_id: str
        ts: str
        schema_version: int = 1
        name: str | None = None
        kind: str | None = None
        value: bool | float | str | None = None
        label: str | None = None
        score: float | None = None
        comment: str | None = None
        tags: list[str] = []
        source: str | None = None
        retracted: bool = False
        user_id: str | None = None
        session_id: str | None = None
        project: str = "default"
        metadata: dict[str, Any] = {}
        received_at: str | None = None

    body, wires = feedback[0], fast._FEEDBACK.decode(feedback[0])
    wire = wires[0]
    fields = fast._asdict(wire)
    print(f"\nfeedback, stage by stage, us per event ({size} events an array)")
    rows = {
        "msgspec decode, no bounds": lambda: msgspec.json.Decoder(list[Bare]).decode(body),
        "msgspec decode, bounds": lambda: fast._FEEDBACK.decode(body),
        "checks+derive+trusted": lambda: [fast._feedback(w) for w in wires],
    }
    for name, fn in rows.items():
        print(f"  {name:<30}{cost(fn, size):>6.2f}")
    single = {
        "  of which asdict": lambda: fast._asdict(wire),
        "  of which derive": lambda: fast.derive(wire),
        "  of which 2 times": lambda: (fast._settle(wire.ts), fast._settle(wire.ts)),
        "  of which trusted": lambda: fast.FeedbackEvent.trusted(fields),
    }
    for name, fn in single.items():
        print(f"  {name:<30}{cost(fn, 1):>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=500, help="events per array")
    parser.add_argument("--arrays", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    feedback, traces = make_arrays(args.size, args.arrays)
    adapters = {
        "feedback": (TypeAdapter(list[FeedbackEvent]), feedback),
        "traces": (TypeAdapter(list[TraceEvent]), traces),
    }
    try:
        import fast_prototype as fast
    except ImportError:  # no msgspec
        print("# msgspec is missing (pip install -e '.[test,bench]'): pydantic alone")
        fast = None  # type: ignore[assignment]
    print(f"# commit {git_commit()}, Python {platform.python_version()}, "
          f"{args.arrays} arrays of {args.size} events, best of {args.repeat}")  # fmt: skip
    print(f"{'kind':<10}{'pydantic us':>14}{'fast us':>10}{'speed-up':>10}{'fast share':>12}")
    for kind, (adapter, bodies) in adapters.items():
        slow = per_event_us(adapter.validate_json, bodies, args.size, args.repeat)
        if fast is None:
            print(f"{kind:<10}{slow:>14.2f}{'-':>10}{'-':>10}{'-':>12}")
            continue
        decode = fast.decode_feedback if kind == "feedback" else fast.decode_traces
        for body in bodies:
            _same(adapter.validate_json(body), decode(body))
        taken = sum(decode(body) is not None for body in bodies) / len(bodies)
        quick = per_event_us(decode, bodies, args.size, args.repeat)
        print(f"{kind:<10}{slow:>14.2f}{quick:>10.2f}{slow / quick:>9.1f}x{taken:>11.0%}")
    if fast is not None:
        stages(fast, feedback, traces, args.size)
    size = statistics.median(len(b) // args.size for b in feedback)
    print(f"feedback events of {size} bytes on average")


if __name__ == "__main__":
    main()
