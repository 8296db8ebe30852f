"""0014: traces, dead letters, rate windows and alerts in monthly partitions.

A store of the last release (at 0013) upgrades with every row once at its newest
version, also after a crash between the runner's steps; the retention then drops a
month's part whole. Each test has a database of its own on the session's store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import unique
from thumbline.charts import RatesFilter, rates_series_sql
from thumbline.queries import rates_sql
from thumbline.schemas import migrations
from thumbline.store import REKEYED, RETENTION_COLUMNS, apply_migrations, apply_retention

JAN, FEB = datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2026, 2, 1, 0, 1, tzinfo=UTC)

#: table -> (its columns in the rows below, its identity, its partition key after 0014)
TABLES: dict[str, tuple[list[str], str, str]] = {
    "traces": (
        ["trace_id", "span_id", "project", "input", "received_at", "version"],
        "project, trace_id, span_id", "toYYYYMM(received_at)",
    ),
    "dead_letters": (
        ["topic", "partition", "offset", "batch_index", "reason", "at"],
        "topic, partition, offset, batch_index", "toYYYYMM(at)",
    ),
    "feedback_rates": (
        ["project", "environment", "model", "capability", "window_seconds", "window_start",
         "total", "bad", "version"],
        "project, environment, model, capability, window_seconds, window_start",
        "toYYYYMM(window_start)",
    ),
    "alerts": (
        ["alert_id", "rule", "state", "project", "window_start", "at", "version", "published"],
        "alert_id, state", "toYYYYMM(at)",
    ),
}  # fmt: skip

#: Each table's rows in two months, each row in a part of its own: a span sent again a
#: month later, a message dead-lettered again by a replay, a window counted again, an
#: alert stored unpublished and then published.
ROWS: dict[str, list[list[Any]]] = {
    "traces": [
        ["t-1", "", "shop", "first question", JAN, 1],
        ["t-1", "", "shop", "the question sent again", FEB, 2],
        ["t-2", "s-1", "shop", "", JAN, 1],
        ["t-3", "", "bot", "", FEB, 1],
    ],
    "dead_letters": [
        ["in", 0, 5, -1, "bad_json", JAN],
        ["in", 0, 5, -1, "bad_json", FEB],  # the same message, a replay later
        ["in", 1, 7, 2, "schema", JAN],
    ],
    "feedback_rates": [
        ["shop", "prod", "m", "*", 60, JAN.replace(second=0), 1, 0, 1],
        ["shop", "prod", "m", "*", 60, JAN.replace(second=0), 3, 1, 2],  # counted again
        ["shop", "prod", "m", "*", 60, FEB.replace(second=0), 2, 2, 1],
    ],
    "alerts": [
        ["a-1", "spike", "firing", "shop", JAN, JAN, 10, 0],
        ["a-1", "spike", "firing", "shop", JAN, JAN, 11, 1],  # published: one version later
        ["a-1", "spike", "resolved", "shop", FEB, FEB, 20, 1],
    ],
}


@pytest.fixture
def at_0013(store, monkeypatch) -> Iterator[str]:
    """A database of a store of the last release (migrated to 0013), with :data:`ROWS`."""
    db = unique("parts14")
    every = migrations.load()
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "load", lambda: [m for m in every if m.version <= 13])
        apply_migrations(store, db)
    try:
        for table, rows in ROWS.items():
            for row in rows:
                store.insert(f"{db}.{table}", [row], column_names=TABLES[table][0])
        yield db
    finally:
        store.command(f"DROP DATABASE IF EXISTS {db}")


def keys(store, db: str, table: str) -> tuple[str, str]:
    return tuple(store.query(  # type: ignore[return-value]
        "SELECT sorting_key, partition_key FROM system.tables "
        "WHERE database = {db:String} AND name = {t:String}", parameters={"db": db, "t": table},
    ).result_rows[0])  # fmt: skip


def latest(store, db: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows as FINAL reads them, by identity."""
    return {
        table: store.query(
            f"SELECT {', '.join(columns)} FROM {db}.{table} FINAL ORDER BY {identity}"  # noqa: S608
        ).result_rows
        for table, (columns, identity, _) in TABLES.items()
    }


def partitions(store, db: str, table: str) -> list[str]:
    return [row[0] for row in store.query(
        "SELECT DISTINCT partition FROM system.parts WHERE database = {db:String} "
        "AND table = {t:String} AND active ORDER BY 1", parameters={"db": db, "t": table},
    ).result_rows]  # fmt: skip


def assert_upgraded(store, db: str, before: dict[str, list[tuple[Any, ...]]]) -> None:
    """Every table keyed and partitioned as 0014 says, each row once at its newest version."""
    assert latest(store, db) == before
    for table, (_, identity, partition_key) in TABLES.items():
        assert keys(store, db, table) == (identity, partition_key)
        assert partitions(store, db, table) == ["202601", "202602"]
        stored = store.query(f"SELECT count() FROM {db}.{table}").result_rows[0][0]  # noqa: S608
        assert stored == len(before[table])  # the copy holds one version of each row
    names = store.query(f"SELECT name FROM system.tables WHERE database = '{db}'").result_rows
    assert not [n for (n,) in names if n.endswith("__rekeyed")]


def test_a_store_at_0013_upgrades_every_table_with_each_row_once_at_its_newest(
    store, at_0013
) -> None:
    db = at_0013
    before = latest(store, db)
    # FINAL shows the newest version of each row: the span sent again, the window counted
    # again, the alert published
    assert [r[3] for r in before["traces"]] == ["", "the question sent again", ""]
    assert [r[:4] for r in before["dead_letters"]] == [("in", 0, 5, -1), ("in", 1, 7, 2)]
    assert [r[6] for r in before["feedback_rates"]] == [3, 2]
    assert [(r[2], r[7]) for r in before["alerts"]] == [("firing", 1), ("resolved", 1)]
    for table in TABLES:
        assert keys(store, db, table)[1] == ""  # not partitioned before

    applied = apply_migrations(store, db)

    assert [m.version for m in applied if m.applied] == [14]
    assert_upgraded(store, db, before)
    assert not any(m.applied for m in apply_migrations(store, db))  # done once


@pytest.mark.parametrize("crash", ["half_copied", "copied_not_swapped", "swapped_not_dropped"])
def test_a_crash_between_the_runners_steps_is_finished_exactly_by_the_next_start(
    store, at_0013, crash
) -> None:
    db = at_0013
    before = latest(store, db)
    (migration,) = [m for m in migrations.load() if m.version == 14]
    for statement in migration.statements(db):
        store.command(statement)  # the new tables exist; nothing recorded yet
    for table, _ in REKEYED[14]:
        new = f"{db}.{table}__rekeyed"
        if crash == "half_copied":
            store.command(f"INSERT INTO {new} SELECT * FROM {db}.{table} FINAL LIMIT 1")  # noqa: S608
            continue
        store.command(f"INSERT INTO {new} SELECT * FROM {db}.{table} FINAL")  # noqa: S608
        if crash == "swapped_not_dropped":
            store.command(f"EXCHANGE TABLES {db}.{table} AND {new}")

    apply_migrations(store, db)

    assert_upgraded(store, db, before)
    assert not any(m.applied for m in apply_migrations(store, db))


def test_the_retention_drops_a_month_whole_once_its_newest_row_expires(store) -> None:
    """With ttl_only_drop_parts the retention's merges drop a part whole when every row
    of it has expired, and rewrite none: a month's rows stay until its newest row is
    older than the setting (at most a month longer). Without it the 1st of January
    would go alone, its part rewritten."""
    db = unique("monthttl")
    apply_migrations(store, db)
    try:
        dec, jan_1, jan_31 = datetime(2025, 12, 15, tzinfo=UTC), JAN.replace(day=1), JAN
        # the 1st of January has expired, the 31st not yet
        days = (datetime.now(UTC) - datetime(2026, 1, 16, tzinfo=UTC)).days
        # set before the rows come, as in a running store: their parts carry the TTL
        apply_retention(store, db, dict.fromkeys(RETENTION_COLUMNS, days))
        store.insert(f"{db}.traces", [
            ["t-dec", "", "p", "", dec, 1], ["t-jan-1", "", "p", "", jan_1, 1],
            ["t-jan-31", "", "p", "", jan_31, 1],
        ], column_names=TABLES["traces"][0])  # fmt: skip
        store.insert(f"{db}.dead_letters", [
            ["in", 0, 1, -1, "x", dec], ["in", 0, 2, -1, "x", jan_1], ["in", 0, 3, -1, "x", jan_31],
        ], column_names=TABLES["dead_letters"][0])  # fmt: skip
        store.insert(f"{db}.feedback_rates", [
            ["p", "e", "m", "*", 60, start, 1, 0, 1] for start in (dec, jan_1, jan_31)
        ], column_names=TABLES["feedback_rates"][0])  # fmt: skip
        store.insert(f"{db}.feedback", [
            [f"e-{i}", "p", start, "joined", 1] for i, start in enumerate((dec, jan_1, jan_31))
        ], column_names=["event_id", "project", "ts", "join_status", "version"])  # fmt: skip
        for table, column in RETENTION_COLUMNS.items():
            engine = store.query(
                "SELECT engine_full FROM system.tables WHERE database = {db:String} "
                "AND name = {t:String}", parameters={"db": db, "t": table},
            ).result_rows[0][0]  # fmt: skip
            assert "ttl_only_drop_parts = 1" in engine, (table, engine)
            # the retention's merges come every merge_with_ttl_timeout (4 h by default)
            store.command(f"ALTER TABLE {db}.{table} MODIFY SETTING merge_with_ttl_timeout = 1")
            stored = f"SELECT toDate({column}) FROM {db}.{table} ORDER BY 1"  # noqa: S608
            wait_for(lambda: store.query(stored).result_rows[0][0] > dec.date(), table)  # noqa: B023
            assert [d for (d,) in store.query(stored).result_rows] == [jan_1.date(), jan_31.date()]
    finally:
        store.command(f"DROP DATABASE IF EXISTS {db}")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: no retention merge in {timeout} s"
        time.sleep(0.2)


def test_the_retentions_ttl_and_whole_part_drops_survive_the_rebuild(store, at_0013) -> None:
    """A TTL set before 0014 is on the old table; the next start's retention puts it on
    the new one (migrate_store runs it after the migrations)."""
    db = at_0013
    days = {"feedback": 30, "traces": 7, "dead_letters": 14, "feedback_rates": 400}
    apply_retention(store, db, days)
    apply_migrations(store, db)
    changed = apply_retention(store, db, days)
    assert sorted(c.split(":")[0] for c in changed) == ["dead_letters", "feedback_rates",
                                                        "traces"]  # fmt: skip
    for table in days:
        engine = store.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} "
            "AND name = {t:String}", parameters={"db": db, "t": table},
        ).result_rows[0][0]  # fmt: skip
        assert " TTL " in engine and "ttl_only_drop_parts = 1" in engine, (table, engine)


def test_a_windows_versions_in_separate_parts_read_as_its_newest_in_every_rates_read(
    store,
) -> None:
    """Every version of a window is in its month's partition (window_start is in the
    sort key), where ClickHouse deduplicates FINAL per partition on its own
    (enable_automatic_decision_for_merging_across_partitions_for_final): the chart, the
    CLI's and the rates job's reads still see each window once, at its newest version."""
    db, project = unique("rateparts"), "p"
    apply_migrations(store, db)
    # a database of its own, merges stopped: in a whole run the session store's busy
    # partitions are merged at once, and the versions would no longer be in parts apart
    store.command(f"SYSTEM STOP MERGES {db}.feedback_rates")
    try:
        assert keys(store, db, "feedback_rates")[1] == "toYYYYMM(window_start)"
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        recent, old = now - timedelta(hours=2), now - timedelta(days=40)  # two months
        for start in (recent, old):
            for version, total in ((1, 1), (2, 5)):  # counted again: a part of its own each
                store.insert(f"{db}.feedback_rates", [[project, "prod", "m", "*", 3600, start,
                                                       total, 1, version]],
                             column_names=TABLES["feedback_rates"][0])  # fmt: skip
        parts = store.query(
            "SELECT partition, count() FROM system.parts WHERE database = {db:String} "
            "AND table = 'feedback_rates' AND active GROUP BY partition ORDER BY partition",
            parameters={"db": db},
        ).result_rows  # fmt: skip
        assert parts == [(f"{old:%Y%m}", 2), (f"{recent:%Y%m}", 2)]  # two versions apart

        chart = rates_series_sql(db, RatesFilter(
            project=project, window_seconds=3600, start=now - timedelta(days=45), end=now,
        ), (60, 3600))  # fmt: skip
        (series,) = store.query(chart.text, parameters=chart.parameters).named_results()
        assert series["total"] == [5, 5]
        assert [datetime.fromtimestamp(t, UTC) for t in series["t"]] == [old, recent]
        listed = store.query(rates_sql(db, window_seconds=3600, project=project,
                                       since=timedelta(days=45), now=now)).result_rows  # fmt: skip
        assert [row[5] for row in listed] == [5, 5]  # total, newest window first
    finally:
        store.command(f"DROP DATABASE IF EXISTS {db}")


def test_versions_of_a_span_a_dead_letter_and_an_alert_in_two_months_read_as_one(
    store, store_settings
) -> None:
    """Their partition column is not in their identity: FINAL merges across partitions,
    so two versions in two months are one row (nothing may skip that merge for them)."""
    db, name = store_settings.clickhouse_database, unique("x")
    rows = {
        "traces": [[name, "", "p", "first", JAN, 1], [name, "", "p", "again", FEB, 2]],
        "dead_letters": [[name, 0, 1, -1, "bad_json", JAN], [name, 0, 1, -1, "replayed", FEB]],
        "alerts": [[name, "spike", "resolved", "p", JAN, JAN, 1, 1],
                   [name, "spike", "resolved", "p", FEB, FEB, 2, 1]],
    }  # fmt: skip
    identity = {"traces": "trace_id", "dead_letters": "topic", "alerts": "alert_id"}
    for table, versions in rows.items():
        for row in versions:
            store.insert(f"{db}.{table}", [row], column_names=TABLES[table][0])
        found = store.query(
            f"SELECT * FROM {db}.{table} FINAL WHERE {identity[table]} = {{n:String}}",  # noqa: S608
            parameters={"n": name},
        ).named_results()  # fmt: skip
        assert len(list(found)) == 1, table
        newest = store.query(
            f"SELECT count() FROM {db}.{table} FINAL WHERE {identity[table]} = {{n:String}} "  # noqa: S608
            f"AND toYYYYMM({TABLES[table][2].removeprefix('toYYYYMM(')} = 202602",
            parameters={"n": name},
        ).result_rows[0][0]  # fmt: skip
        assert newest == 1, table
