"""The rates job's reads of ``feedback`` count each event once, at its newest version.

The recompute (:func:`read_windows`) and the restart's replay (:func:`restore_rates`)
read the events of a time range without ``FINAL`` over the table. Versions stay rows
of their own here (merges stopped), as they are between merges: a newer version that
moved an event to another window, changed its label, or retracted it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from tests.conftest import unique
from thumbline.stream_jobs.bad_feedback_rates import RateState
from thumbline.stream_jobs.rates_store import read_windows, restore_rates
from thumbline.stream_jobs.sink import ClickHouseSink

T0 = 1_704_153_600.0  # 2024-01-02 00:00 UTC: no other test's rows in these windows


def row(project: str, event_id: str, at: float, version: int, **fields: object) -> bytes:
    stamp = datetime.fromtimestamp(at, UTC).isoformat()
    return orjson.dumps({
        "event_id": event_id, "trace_id": f"{event_id}-t", "version": version, "ts": stamp,
        "received_at": stamp, "label": "good", "source": "explicit", "annotator": "end_user",
        "project": project, "environment": "prod", "model": "m1", "capability": "support",
        "comment": "", "retracted": 0, "join_status": "joined", **fields,
    })  # fmt: skip


@pytest.fixture
def versions(store, store_settings) -> Iterator[ClickHouseSink]:
    """A sink into the session store, with merges stopped while the test runs."""
    table = f"{store_settings.clickhouse_database}.feedback"
    store.command(f"SYSTEM STOP MERGES {table}")
    try:
        yield ClickHouseSink(store, store_settings.clickhouse_database)
    finally:
        store.command(f"SYSTEM START MERGES {table}")


def stored_versions(versions: ClickHouseSink, project: str) -> None:
    """In minute 0: ``a`` good then bad, ``b`` moved to minute 2, ``c`` retracted, ``d`` as is."""
    for batch in (
        [row(project, "a", T0 + 1, 1), row(project, "b", T0 + 2, 1), row(project, "c", T0 + 3, 1),
         row(project, "d", T0 + 4, 1)],
        [row(project, "a", T0 + 1, 2, label="bad"), row(project, "b", T0 + 125, 2),
         row(project, "c", T0 + 3, 2, retracted=1)],
    ):  # fmt: skip
        versions.add_json("feedback", batch)
        versions.flush()  # a part per batch: the versions stay apart


def test_a_recompute_counts_each_events_newest_version(versions, store, store_settings) -> None:
    project, db = unique("rr"), store_settings.clickhouse_database
    stored_versions(versions, project)
    rates = RateState(window=60, sliding=(120,), clock=lambda: T0 + 600)
    found = read_windows(rates, store, db, [T0, T0 + 120])
    dims = (project, "prod", "m1", "*")
    assert (found[T0][dims].good, found[T0][dims].bad) == (1, 1)  # d good, a bad; b, c gone
    assert (found[T0 + 120][dims].good, found[T0 + 120][dims].bad) == (1, 0)  # b moved here


def test_a_restart_replays_each_events_newest_version(versions, store, store_settings) -> None:
    project, db = unique("rr"), store_settings.clickhouse_database
    stored_versions(versions, project)
    rates = RateState(window=60, sliding=(120,), history=600, clock=lambda: T0 + 200)
    # this project's share, as a worker holding its partition restores it: the windows
    # other tests of the session wrote (now, not in 2024) say nothing about where it replays
    restore_rates(rates, store, db, now=T0 + 200, keep=lambda p: p == project)
    dims = (project, "prod", "m1", "*")
    minute0, minute2 = rates.windows[T0].counts[dims], rates.windows[T0 + 120].counts[dims]
    assert (minute0.good, minute0.bad, minute2.good) == (1, 1, 1)
