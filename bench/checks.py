"""What every pipeline-bench variant is timed and checked by, inside its own process.

A variant is done when its feedback table holds, after ``FINAL``, exactly the
workload's N rows and exactly its orphans (orphans appear only after the join
grace, so the wait includes them). The time runs from the first message the
variant's stream received to the last feedback row written.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

#: wall time the variant's stream got its first input
FIRST_MESSAGE: list[float | None] = [None]
RATES_WAIT_SECONDS = 30.0


def note_first_message() -> None:
    if FIRST_MESSAGE[0] is None:
        FIRST_MESSAGE[0] = time.time()


def join_counts(client: Any, db: str, table: str = "feedback") -> dict[str, int]:
    """Rows of ``table`` after FINAL, and how many are orphans, joined, corrected, and still
    pending (waiting for their trace: not an outcome yet)."""
    rows, orphans, corrected, pending = client.query(
        "SELECT count(), countIf(join_status = 'orphan'), countIf(join_status = 'corrected'), "
        f"countIf(join_status = 'pending') FROM {db}.{table} FINAL"
    ).result_rows[0]
    return {"rows": int(rows), "orphans": int(orphans),
            "joined": int(rows) - int(orphans) - int(pending), "corrected": int(corrected),
            "pending": int(pending)}  # fmt: skip


async def wait_rows(
    client: Any, db: str, n: int, orphans: int, started: float, budget: float,
    *, table: str = "feedback",
) -> dict:  # fmt: skip
    """Wait for N rows with exactly ``orphans`` orphans (or until ``budget`` seconds pass).

    ``total_seconds`` runs from ``started`` (the stream's start, group join
    included); ``seconds`` from the first message the stream received to the
    last feedback row's own ``inserted_at``: polling from the loop the stream
    runs on would be delayed by the work it measures.
    """
    counts: dict[str, int] = {}
    while time.perf_counter() - started <= budget:
        # In a thread, cheap count() first: a blocking FINAL every few ms on the
        # loop the stream runs on would slow down the work it measures.
        have = await asyncio.to_thread(_count, client, f"{db}.{table}")
        if have >= n:
            counts = await asyncio.to_thread(join_counts, client, db, table)
            if counts["rows"] >= n and counts["orphans"] == orphans and not counts["pending"]:
                break
        await asyncio.sleep(0.1)
    else:
        counts = await asyncio.to_thread(join_counts, client, db, table)
    total = time.perf_counter() - started
    last = client.query(f"SELECT max(inserted_at) FROM {db}.{table}").result_rows[0][0]
    begun = FIRST_MESSAGE[0] or time.time()
    last_insert = last.replace(tzinfo=UTC).timestamp()
    seconds = max(last_insert - begun, 1e-3) if counts["rows"] else total
    complete = counts["rows"] == n and counts["orphans"] == orphans and not counts["pending"]
    return {**counts, "complete": complete, "total_seconds": total, "seconds": seconds,
            "last_insert": last_insert}  # fmt: skip


def _count(client: Any, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


async def thumbline_rates(client: Any, db: str, window: int) -> dict[str, Any]:
    """Every window thumbline wrote to ``feedback_rates`` against a recount from ``feedback
    FINAL`` (the integration tests' helper), waiting up to ``RATES_WAIT_SECONDS`` for the
    rates to catch up with the last rows."""
    from tests.integration.conftest import rate_mismatches  # the tests' own recount

    def run_query(sql: str) -> list[tuple]:
        return client.query(sql).result_rows

    deadline = time.monotonic() + RATES_WAIT_SECONDS
    while True:
        checked, problems = await asyncio.to_thread(
            rate_mismatches, run_query, db, window=window, where="1"
        )
        if not problems or time.monotonic() > deadline:
            return {"rate_rows": checked, "rate_problems": len(problems),
                    "rate_examples": problems[:3]}  # fmt: skip
        await asyncio.sleep(1.0)


async def own_rates(client: Any, db: str, feedback: str, rates: str) -> dict[str, Any]:
    """A baseline's (project, model) windows of bad counts against a recount from its
    feedback table, waiting up to ``RATES_WAIT_SECONDS``."""
    recount = (
        "SELECT project, model, toUnixTimestamp(toStartOfInterval(ts, INTERVAL 60 SECOND)) AS w, "
        f"countIf(label = 'bad') AS bad, count() AS total FROM {db}.{feedback} FINAL "
        "GROUP BY project, model, w"
    )
    written = (
        "SELECT project, model, toUnixTimestamp(window_start), bad, total "
        f"FROM {db}.{rates} FINAL WHERE total > 0"
    )
    deadline = time.monotonic() + RATES_WAIT_SECONDS
    while True:
        want = {tuple(r[:3]): tuple(r[3:]) for r in client.query(recount).result_rows}
        have = {tuple(r[:3]): tuple(r[3:]) for r in client.query(written).result_rows}
        problems = [
            f"{key}: wrote {have.get(key)}, table has {want.get(key)}"
            for key in sorted(set(want) | set(have))
            if want.get(key) != have.get(key)
        ]
        if not problems or time.monotonic() > deadline:
            return {"rate_rows": len(have), "rate_problems": len(problems),
                    "rate_examples": problems[:3]}  # fmt: skip
        await asyncio.sleep(1.0)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What the parent tells a variant's process."""

    bootstrap: str
    prefix: str  # the filled input topics
    n: int  # feedback events sent
    orphans: int  # of which have no trace
    grace: float  # seconds feedback waits for its trace before it is an orphan
    budget: float  # seconds the variant may take
    group: str  # its own consumer group
    profile: bool = False
