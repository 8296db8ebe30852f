"""0013: feedback in monthly partitions of event time; an older store upgrades with its rows.

Two versions of one event can have their times in two months (a changed vote): every
read must still show the newest one only, across the partitions.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import unique
from tests.integration.test_store import migrate_to
from thumbline.inbox import InboxFilter, inbox_sql
from thumbline.store import _rekey, apply_migrations

COLUMNS = ["event_id", "project", "label", "join_status", "ts", "received_at", "version",
           "retracted"]  # fmt: skip
JAN, FEB = datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2026, 2, 1, 0, 1, tzinfo=UTC)


def keys(store, db: str) -> tuple[str, str]:
    return tuple(store.query(  # type: ignore[return-value]
        "SELECT sorting_key, partition_key FROM system.tables "
        "WHERE database = {db:String} AND name = 'feedback'", parameters={"db": db},
    ).result_rows[0])  # fmt: skip


def test_a_store_at_0012_upgrades_with_every_event_at_its_newest_version(store) -> None:
    db = unique("parts")
    try:
        migrate_to(store, db, 12)  # a store of the last release: 0005's new keys in place
        _rekey(store, db, "feedback", "project, event_id")
        _rekey(store, db, "traces", "project, trace_id, span_id")
        assert keys(store, db) == ("project, event_id", "")
        store.insert(f"{db}.feedback", [
            ["e-1", "shop", "good", "joined", JAN, JAN, 1, 0],
            ["e-1", "shop", "bad", "joined", FEB, FEB, 2, 0],  # changed, a month later
            ["e-2", "shop", "good", "orphan", JAN, JAN, 1, 0],
            ["e-3", "bot", "bad", "joined", FEB, FEB, 1, 0],
            ["e-4", "bot", "bad", "joined", FEB, FEB, 1, 0],
            ["e-4", "bot", "bad", "joined", FEB, FEB, 2, 1],  # retracted
        ], column_names=COLUMNS)  # fmt: skip
        final = f"SELECT project, event_id, label, ts FROM {db}.feedback FINAL ORDER BY 2"
        before = store.query(final).result_rows
        assert [r[1] for r in before] == ["e-1", "e-2", "e-3"]

        apply_migrations(store, db)

        assert keys(store, db) == ("project, event_id", "toYYYYMM(ts)")
        assert store.query(final).result_rows == before
        parts = store.query(
            "SELECT DISTINCT partition FROM system.parts WHERE database = {db:String} "
            "AND table = 'feedback' AND active ORDER BY 1", parameters={"db": db},
        ).result_rows  # fmt: skip
        assert parts == [("202601",), ("202602",)]
        tables = store.query(f"SELECT name FROM system.tables WHERE database = '{db}'")
        assert ("feedback__rekeyed",) not in tables.result_rows
        assert not any(m.applied for m in apply_migrations(store, db))  # done once
    finally:
        store.command(f"DROP DATABASE IF EXISTS {db}")


def test_versions_in_two_months_read_as_one_event(store, store_settings) -> None:
    db, project = store_settings.clickhouse_database, unique("p")
    assert keys(store, db)[1] == "toYYYYMM(ts)"
    store.insert(f"{db}.feedback", [
        [f"{project}-vote", project, "good", "joined", JAN, JAN, 1, 0],
        [f"{project}-vote", project, "bad", "joined", FEB, FEB, 2, 0],  # the later click
    ], column_names=COLUMNS, settings={"insert_deduplicate": 0})  # fmt: skip
    final = store.query(
        f"SELECT label FROM {db}.feedback FINAL WHERE project = '{project}'"  # noqa: S608
    ).result_rows
    assert final == [("bad",)]
    for candidates in (None, 0):
        query = inbox_sql(db, InboxFilter(project=project), candidates=candidates)
        rows = store.query(query.text, parameters=query.parameters).result_rows
        assert len(rows) == 1
    january = inbox_sql(db, InboxFilter(project=project, end=FEB))
    assert store.query(january.text, parameters=january.parameters).result_rows == []
