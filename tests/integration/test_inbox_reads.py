"""The inbox's page without FINAL over the table: exact whatever versions are stored.

Every page read through its candidates (:func:`thumbline.inbox.inbox_sql`) must be
the page ``FINAL`` gives (``candidates=0``): one row per event, its newest
version, retracted events left out, in the same order. Each test writes rows of a
project of its own into the session's chDB store, with versions that move an
event in time and out of a filter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tests.conftest import unique
from thumbline.inbox import InboxFilter, Position, inbox_sql
from thumbline.settings import Settings

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
COLUMNS = ["project", "event_id", "trace_id", "label", "comment", "ts", "received_at",
           "join_status", "retracted", "version"]  # fmt: skip


@pytest.fixture
def write(store: Client, store_settings: Settings) -> Iterator[Callable[..., None]]:
    """Insert one version of one row; merges stay off meanwhile, so every version stays
    stored as a row of its own, as it is between merges (else a merge could leave only
    the newest, and the test would prove nothing)."""
    table = f"{store_settings.clickhouse_database}.feedback"

    def insert(project: str, event_id: str, *, seconds_ago: float, version: int,
               label: str = "good", retracted: int = 0) -> None:  # fmt: skip
        ts = NOW - timedelta(seconds=seconds_ago)
        store.insert(
            table,
            [[project, event_id, "", label, "", ts, ts, "joined", retracted, version]],
            column_names=COLUMNS, settings={"insert_deduplicate": 0},
        )  # fmt: skip

    store.command(f"SYSTEM STOP MERGES {table}")
    try:
        yield insert
    finally:
        store.command(f"SYSTEM START MERGES {table}")


@pytest.fixture
def page(store: Client, store_settings: Settings) -> Callable[..., list[tuple[str, str]]]:
    def read(filters: InboxFilter, **options: Any) -> list[tuple[str, str]]:
        query = inbox_sql(store_settings.clickhouse_database, filters, NOW, **options)
        result = store.query(query.text, parameters=query.parameters)
        return [(row["event_id"], row["label"]) for row in result.named_results()]

    return read


def test_a_page_shows_each_event_once_at_its_newest_version(write, page) -> None:
    project = unique("p")
    for i in range(30):  # version 1 newest in time; version 2 an older time, another label
        write(project, f"e{i:02d}", seconds_ago=i, version=1, label="good")
        if i % 3 == 0:
            write(project, f"e{i:02d}", seconds_ago=1000 + i, version=2, label="bad")
    filters = InboxFilter(project=project, limit=10)
    got = page(filters)
    assert got == page(filters, candidates=0)
    assert len(got) == 10 and len({e for e, _ in got}) == 10
    assert ("e00", "good") not in got and ("e01", "good") in got  # e00 moved back in time
    everything = page(InboxFilter(project=project, limit=100))
    assert ("e00", "bad") in everything and ("e00", "good") not in everything


def test_older_versions_that_crowd_the_candidates_out_still_give_a_full_page(write, page) -> None:
    project = unique("p")
    for i in range(40):  # the 40 newest stored rows are versions nobody sees any more
        write(project, f"stale{i:02d}", seconds_ago=i, version=1, label="bad")
        write(project, f"stale{i:02d}", seconds_ago=i, version=2, label="good")
    for i in range(20):
        write(project, f"old{i:02d}", seconds_ago=100 + i, version=1, label="bad")
    filters = InboxFilter(project=project, labels=("bad",), limit=5)
    got = page(filters, extra=1, candidates=8)
    assert got == [(f"old{i:02d}", "bad") for i in range(6)]
    assert got == page(filters, extra=1, candidates=0)


def test_an_event_whose_newest_version_is_retracted_is_not_listed(write, page) -> None:
    project = unique("p")
    write(project, "kept", seconds_ago=5, version=1)
    write(project, "gone", seconds_ago=1, version=1)
    write(project, "gone", seconds_ago=1, version=2, retracted=1)
    assert page(InboxFilter(project=project)) == [("kept", "good")]


def test_pages_after_a_cursor_match_the_final_read(write, page, store, store_settings) -> None:
    project = unique("p")
    for i in range(25):
        write(project, f"e{i:02d}", seconds_ago=i // 2, version=1, label=("good", "bad")[i % 2])
        if i % 4 == 0:
            write(project, f"e{i:02d}", seconds_ago=i // 2 + 0.5, version=3, label="good")
    after = None
    seen: list[tuple[str, str]] = []
    while True:
        filters = InboxFilter(project=project, limit=4, after=after)
        query = inbox_sql(store_settings.clickhouse_database, filters, NOW, candidates=5)
        rows = list(store.query(query.text, parameters=query.parameters).named_results())
        final = page(filters, candidates=0)
        assert [(r["event_id"], r["label"]) for r in rows] == final
        if not rows:
            break
        seen += final
        after = Position.of({k: str(v) if k == "ts" else v for k, v in rows[-1].items()})
    assert sorted(e for e, _ in seen) == [f"e{i:02d}" for i in range(25)]
