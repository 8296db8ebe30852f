"""The rates job's per-row cost: ``RateState.apply`` on enriched rows as the join writes them.

Rows come as ``orjson.loads`` gives them from ``feedback.enriched`` (``ts`` an ISO
string), in arrays of 1,000 (the join's array size), over 3 projects x 2
environments x 2 models x 2 capabilities, 10% bad, on a clock that keeps every
window open (the hot path: each row is validated and counted once). Reports rows
per second, the best of ``--repeat`` runs.

Run: ``python bench/rates_rows.py --rows 200000 --repeat 5``
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime

import orjson

from thumbline.stream_jobs.bad_feedback_rates import RateState

T0 = 1_795_000_020.0


def arrays(rows: int, seed: int) -> list[bytes]:
    """``rows`` enriched rows in arrays of 1,000, encoded as the join publishes them."""
    rng = random.Random(seed)
    out, batch = [], []
    for n in range(rows):
        at = T0 + n * 0.01
        batch.append({
            "event_id": f"e-{seed}-{n}", "trace_id": f"t-{n}", "version": 1,
            "ts": datetime.fromtimestamp(at, UTC).isoformat(), "received_at": None,
            "label": "bad" if rng.random() < 0.1 else "good", "source": "explicit",
            "annotator": "end_user", "project": f"project-{n % 3}",
            "environment": ("prod", "staging")[n % 2], "model": ("m1", "m2")[n // 2 % 2],
            "capability": ("support", "search")[n // 4 % 2],
            "comment": "wrong" if n % 7 == 0 else None, "score": None, "retracted": False,
            "join_status": "joined", "name": "thumbs", "kind": "thumbs",
        })  # fmt: skip
        if len(batch) == 1000:
            out.append(orjson.dumps(batch))
            batch = []
    if batch:
        out.append(orjson.dumps(batch))
    return out


def run(messages: list[bytes]) -> float:
    """Seconds to decode and count every message into a fresh state."""
    rates = RateState(window=60, sliding=(300,), lateness=30, history=7200, clock=lambda: T0)
    decoded = [orjson.loads(m) for m in messages]  # decoding is the job's, not the rates'
    began = time.perf_counter()
    for offset, rows in enumerate(decoded):
        rates.apply(rows, partition=(0, 0), offset=offset)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    messages = arrays(args.rows, seed=1)
    best = min(run(messages) for _ in range(args.repeat))
    per_row = best / args.rows * 1e6
    print(f"RateState.apply: {args.rows / best:,.0f} rows/s ({per_row:.2f} us a row)")  # noqa: T201


if __name__ == "__main__":
    main()
