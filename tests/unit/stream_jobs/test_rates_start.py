"""A starting worker rebuilds its rate windows from the store once, for its share of the
projects: the start and the first assignment of partitions are one read, and the windows
hold each event of its projects once and nothing of the others'."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests.unit.stream_jobs.test_rates_and_alerts import AckingProducer
from thumbline.settings import load_settings
from thumbline.stream_jobs.app import StreamApp
from thumbline.stream_jobs.spike_alerts import load_rules

COLUMNS = ("event_id", "trace_id", "version", "ts", "label", "source", "annotator", "comment",
           "score", "retracted", "project", "environment", "model", "capability")  # fmt: skip


class Result:
    def __init__(self, names: tuple[str, ...] = (), rows: list[tuple] | None = None) -> None:
        self.column_names, self.result_rows = names, rows or []


class Store:
    """The store as the rates' restore reads it: feedback rows of 20 projects in the last
    minutes, no rate window written yet, no alert; every query counted."""

    def __init__(self, now: float) -> None:
        self.queries: list[str] = []
        self.rows = [
            (f"e{p}-{n}", f"t{p}-{n}", 1, datetime.fromtimestamp(now - 300 + n, UTC)
             .replace(tzinfo=None), "bad" if n % 3 else "good", "explicit", "end_user", "",
             None, 0, f"project-{p}", "prod", "m", "support")
            for p in range(20) for n in range(5)
        ]  # fmt: skip

    def query(self, sql: str, parameters: dict | None = None) -> Result:
        self.queries.append(sql)
        if ".feedback FINAL" in sql and "event_id" in sql:
            return Result(COLUMNS, self.rows)
        return Result()

    def raw_insert(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def restores(store: Store) -> int:
    """The restores the store saw: each reads the written windows once."""
    return sum(".feedback_rates FINAL" in q for q in store.queries)


async def test_a_starting_worker_reads_the_store_once_for_its_share(tmp_path):
    settings = load_settings(data_dir=tmp_path, topic_prefix="t.", partitions=4)
    store = Store(time.time())
    app = StreamApp(settings, "127.0.0.1:1", store=lambda readonly: store)
    app._producer = AckingProducer()  # type: ignore[assignment]
    job = await app._start_rates(load_rules(None, settings.rate_window_seconds))
    try:
        await job.assign({0, 2})  # the group gave this worker half the partitions
        assert restores(store) == 1
        held = {f"project-{p}" for p in range(20) if job.holds(f"project-{p}")}
        assert 0 < len(held) < 20
        counted: dict[str, int] = {}
        for project, _ in job.rates.seen:
            counted[project] = counted.get(project, 0) + 1
        assert counted == dict.fromkeys(held, 5)
        await job.assign({0, 2})  # the same share again: nothing to read
        assert restores(store) == 1
    finally:
        assert app._notifier is not None
        await app._notifier.stop()
